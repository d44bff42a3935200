"""OSProcess: readiness, exit reasons, TERM then KILL, reaping, restarts, logs."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from echo.runtime import (
    KILLED,
    ChildSpec,
    OSProcess,
    ProcessExited,
    StartError,
    StartTimeout,
    Supervisor,
)

pytestmark = pytest.mark.anyio

PY = sys.executable
READY_THEN_SLEEP = "print('booting'); print('ready', flush=True); import time; time.sleep(60)"
IGNORE_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


def reaped(pid: int) -> bool:
    """No process and no zombie left with this pid."""
    try:
        psutil.Process(pid)  # a zombie would still be found here
    except psutil.NoSuchProcess:
        return True
    return False


async def test_started_means_ready_and_stop_terms_the_group_and_reaps() -> None:
    process = OSProcess([PY, "-c", READY_THEN_SLEEP], ready=r"^ready$", start_timeout=10)
    await process.start()
    assert process.alive and process.pid is not None
    assert os.getpgid(process.pid) == process.pid  # its own process group
    pid = process.pid
    assert await process.stop() == "shutdown"
    assert process.returncode == -15
    assert reaped(pid)


async def test_without_a_ready_rule_it_is_started_once_spawned() -> None:
    process = await OSProcess([PY, "-c", "import time; time.sleep(60)"]).start()
    assert process.alive
    await process.stop(timeout="brutal_kill")
    assert process.returncode == -9


async def test_a_ready_callback_decides_readiness() -> None:
    seen: list[int | None] = []

    async def check(p: OSProcess) -> None:
        seen.append(p.pid)

    async with OSProcess([PY, "-c", "import time; time.sleep(60)"], ready=check) as process:
        assert seen == [process.pid]

    async def broken(p: OSProcess) -> None:
        raise RuntimeError("probe failed")

    with pytest.raises(StartError):
        await OSProcess([PY, "-c", "import time; time.sleep(60)"], ready=broken).start()


async def test_exit_code_zero_is_normal_and_nonzero_is_a_crash() -> None:
    ok = await OSProcess([PY, "-c", "pass"]).start()
    assert await ok.wait() == "normal"
    bad = await OSProcess([PY, "-c", "raise SystemExit(3)"]).start()
    reason = await bad.wait()
    assert isinstance(reason, ProcessExited) and reason.returncode == 3


async def test_exiting_before_ready_fails_the_start() -> None:
    process = OSProcess([PY, "-c", "raise SystemExit(4)"], ready="ready")
    with pytest.raises(StartError) as info:
        await process.start()
    assert isinstance(info.value.reason, ProcessExited)


async def test_start_timeout_kills_the_process() -> None:
    process = OSProcess([PY, "-c", "import time; time.sleep(60)"], ready="ready", start_timeout=0.3)
    with pytest.raises(StartTimeout):
        await process.start()
    assert process.pid is not None and reaped(process.pid)


async def test_a_child_that_ignores_term_is_killed_after_the_shutdown_timeout() -> None:
    process = await OSProcess([PY, "-c", IGNORE_TERM], ready="ready").start()
    assert process.pid is not None
    assert await process.stop(timeout=0.3) == KILLED
    assert process.returncode == -9
    assert reaped(process.pid)


async def test_grandchildren_in_the_group_are_killed_too() -> None:
    script = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print('ready', c.pid, flush=True); time.sleep(60)"
    )
    process = OSProcess([PY, "-c", script], ready=r"ready \d+")
    await process.start()
    assert process.pid is not None
    children = psutil.Process(process.pid).children()
    await process.stop()
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive and len(gone) == 1


async def test_supervisor_restarts_a_process_that_exits_nonzero(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    script = (
        "import pathlib, sys, time; p = pathlib.Path(sys.argv[1]); "
        "n = int(p.read_text()) + 1 if p.exists() else 1; p.write_text(str(n)); "
        "print('ready', flush=True); "
        "sys.exit(3) if n == 1 else time.sleep(60)"
    )
    spec = ChildSpec("proc", lambda: OSProcess([PY, "-c", script, str(counter)], ready="ready"))
    async with Supervisor([spec]) as sup:
        first = (await sup.which_children())[0].process
        assert first is not None
        reason = await first.wait()
        assert isinstance(reason, ProcessExited) and reason.returncode == 3
        second: Any = (await sup.which_children())[0].process
        assert second is not None and second is not first and second.alive
        assert counter.read_text() == "2"
    assert reaped(second.pid)


async def test_output_goes_to_a_private_log_file(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    script = "import sys; print('ready', flush=True); print('oops', file=sys.stderr)"
    for ready in ("ready", None):
        process = await OSProcess([PY, "-c", script], ready=ready, log_path=log).start()
        assert await process.wait() == "normal"
    text = log.read_text()
    assert text.count("ready") == 2 and text.count("oops") == 2  # appended, both streams
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_argv_must_be_a_list() -> None:
    with pytest.raises(ValueError, match="no shell"):
        OSProcess("python -c pass")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        OSProcess([])


async def test_stop_during_readiness_wait_fails_the_start() -> None:
    spawned = anyio.Event()

    async def never_ready(p: OSProcess) -> None:
        spawned.set()
        await anyio.Event().wait()

    process = OSProcess([PY, "-c", "import time; time.sleep(60)"], ready=never_ready)
    async with anyio.create_task_group() as tg:

        async def stop_it() -> None:
            await spawned.wait()
            await process.stop()

        tg.start_soon(stop_it)
        with pytest.raises(StartError):
            await process.start()
    assert process.pid is not None and reaped(process.pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
async def test_die_with_parent_sets_the_death_signal_and_hands_over_the_parent_pipe(
    tmp_path: Path,
) -> None:
    # The child reports the kernel's record of its death signal, then waits on the pipe.
    script = (
        "import ctypes, os, anyio; from echo.runtime.deathsig import watch_parent; "
        "v = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(v), 0, 0, 0); "
        "print('ready', v.value, os.environ['ECHO_PARENT_FD'], flush=True); "
        "anyio.run(watch_parent, int(os.environ['ECHO_PARENT_FD'])); print('parent gone')"
    )
    log = tmp_path / "child.log"
    proc = OSProcess([PY, "-c", script], ready=r"^ready", log_path=log, die_with_parent=True)
    await proc.start()
    fields = log.read_text().split()
    assert fields[0] == "ready" and int(fields[1]) == 9  # SIGKILL
    assert fields[2].isdigit()
    await proc.stop()


async def test_watch_parent_returns_when_the_write_end_closes() -> None:
    from echo.runtime.deathsig import parent_pipe

    read, write = parent_pipe()
    script = ("import sys, anyio; from echo.runtime.deathsig import watch_parent; "
              "anyio.run(watch_parent, int(sys.argv[1])); print('parent gone', flush=True)")
    child = await anyio.open_process([PY, "-c", script, str(read)], pass_fds=(read,))
    os.close(read)
    try:
        os.close(write)  # what the kernel does when the parent dies
        assert child.stdout is not None
        out = await child.stdout.receive()
        assert out.strip() == b"parent gone"
        assert await child.wait() == 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
