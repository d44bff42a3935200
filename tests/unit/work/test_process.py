"""run_process: stdin closed, timeouts and cancellation kill the whole group."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import psutil
import pytest

from echo.work import process
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


async def test_a_program_that_may_not_run_is_a_permission_error_as_exec_says(
        tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)  # not executable
    with pytest.raises(PermissionError):
        await run_process(["./run.sh"], cwd=tmp_path, time_limit=10)
    with pytest.raises(PermissionError):
        await run_process(["run.sh"], env={"PATH": str(tmp_path)}, time_limit=10)
    script.chmod(0o755)
    done = await run_process(["run.sh"], env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
                             time_limit=10)
    assert done.stdout == b"hi\n"


@pytest.fixture
def old_setpriv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A `setpriv` that knows no --pdeathsig (util-linux before 2.33)."""
    fake = tmp_path / "setpriv"
    fake.write_text("#!/bin/sh\necho \"setpriv: unrecognized option '--pdeathsig'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    real_which = shutil.which
    monkeypatch.setattr(process.shutil, "which",
                        lambda name, *a, **k: str(fake) if name == "setpriv" else real_which(name, *a, **k))
    process._setpriv.cache_clear()
    yield
    process._setpriv.cache_clear()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="setpriv is Linux's")
@pytest.mark.usefixtures("old_setpriv")
async def test_a_setpriv_without_the_death_signal_is_said_once_and_children_still_run(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="echo.work.process"):
        first = await run_process([sys.executable, "-c", "print('ran')"], time_limit=10)
        second = await run_process([sys.executable, "-c", "print('ran')"], time_limit=10)
    assert first.stdout == second.stdout == b"ran\n"
    said = [r.getMessage() for r in caplog.records if "will not die" in r.getMessage()]
    assert len(said) == 1 and "unrecognized option" in said[0]
