"""run_process: stdin closed, timeouts and cancellation kill the whole group."""

from __future__ import annotations

import os
import signal
import sys
import uuid

import anyio
import psutil
import pytest

from echo.work.process import run_process


def _with_marker(marker: str) -> list[int]:
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("MARK") == marker:
                out.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


async def test_stdin_is_delivered_then_closed() -> None:
    done = await run_process([sys.executable, "-c", "import sys; print(sys.stdin.read()[::-1])"],
                             stdin=b"abc", time_limit=10)
    assert (done.returncode, done.stdout.strip(), done.timed_out) == (0, b"cba", False)


async def test_timeout_kills_the_group_including_grandchildren() -> None:
    marker = uuid.uuid4().hex
    # The child ignores TERM and spawns a grandchild: only the group KILL ends both.
    script = ("import signal, subprocess, sys, time\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "print('up', flush=True); time.sleep(60)")
    env = {**os.environ, "MARK": marker}
    with anyio.fail_after(10):
        done = await run_process([sys.executable, "-c", script], env=env, time_limit=1,
                                 kill_grace=0.5)
    assert done.timed_out and done.signal == 9 and done.stdout.strip() == b"up"
    assert _with_marker(marker) == []
    me = psutil.Process()
    assert [c for c in me.children(recursive=True) if c.status() == psutil.STATUS_ZOMBIE] == []


async def test_cancelling_the_caller_kills_the_child() -> None:
    marker = uuid.uuid4().hex
    env = {**os.environ, "MARK": marker}
    with anyio.move_on_after(1):
        await run_process([sys.executable, "-c", "import time; time.sleep(60)"], env=env,
                          time_limit=60, kill_grace=0.5)
    assert _with_marker(marker) == []


async def test_a_cancelled_caller_kills_a_group_that_ignores_term_after_the_short_grace() -> None:
    """Whoever cancels (a lease's deadline) cannot wait out the run's own kill grace: a
    group ignoring TERM gets KILL after `CANCEL_GRACE`, not after an hour."""
    marker = uuid.uuid4().hex
    script = ("import signal, subprocess, sys, time\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "print('up', flush=True); time.sleep(60)")
    env = {**os.environ, "MARK": marker}
    with anyio.fail_after(30):  # an hour's grace would never end in time
        with anyio.move_on_after(1):
            await run_process([sys.executable, "-c", script], env=env, time_limit=60,
                              kill_grace=3600)
    assert _with_marker(marker) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
async def test_the_child_is_set_to_die_with_its_parent() -> None:
    # prctl(PR_GET_PDEATHSIG) in the child: the kernel's own record of the setting.
    script = ("import ctypes; v = ctypes.c_int(); "
              "ctypes.CDLL(None).prctl(2, ctypes.byref(v), 0, 0, 0); print(v.value)")
    done = await run_process([sys.executable, "-c", script], time_limit=10)
    assert int(done.stdout) == signal.SIGKILL


async def test_a_missing_program_is_still_an_oserror() -> None:
    with pytest.raises(FileNotFoundError):
        await run_process([f"/nonexistent/{uuid.uuid4().hex}"], time_limit=10)
