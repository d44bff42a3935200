"""The one way the work queue runs a child process.

Both the Claude executor and the `command` executor go through `run_process`, so
every child gets the same guarantees:

- arguments are a list, never a shell string;
- stdin is written and then closed (the Claude CLI waits forever on an open stdin);
- the child leads its own process group (`start_new_session`), so whatever it
  spawns can be killed with it;
- a wall-clock timeout sends TERM to the whole group, then KILL after the caller's
  grace period; any cancellation of the caller (a cancelled task, a drain, a lost
  lease, a lease's deadline) does the same with at most `CANCEL_GRACE` between the
  two, since whoever cancels is on a deadline; the child is always reaped: no zombie,
  no orphaned grandchild;
- output is captured up to a limit, so a chatty child cannot exhaust memory;
- on Linux the child dies with its worker: it is started through util-linux's
  `setpriv --pdeathsig KILL`, which asks the kernel (prctl PR_SET_PDEATHSIG) for
  SIGKILL when its parent goes and then execs the program in its place (no process
  in between), so a worker killed with SIGKILL (or by the OOM killer) leaves no
  `claude` running on, spending tokens. anyio's `open_process` takes no
  `preexec_fn`, and its backend's one is private: `setpriv` is the public way. As
  `setpriv` would report a missing program as its own exit status, the program is
  looked up first (`_program`), so a missing one is still a `FileNotFoundError`.
  Without `setpriv` (not Linux, or util-linux absent) children are started as
  before, and the first start says once what is lost.

The death signal is tied to the *thread* that forked the child, not the process.
With asyncio that is the thread running the event loop (`subprocess.Popen` runs
there), so the signal fires when that loop's thread ends: for a worker, when the
process dies. A loop run in a thread of its own has reaped its children before the
thread can end, since `run_process` always waits for its child. A worker that dies
in the microseconds between the fork and setpriv's prctl leaves that one child
unwatched (the prctl hook of `echo.runtime.deathsig` closes that gap for the agents,
which `echo.runtime` starts with a `preexec_fn` of the standard library's own).

Only the direct child is covered: a grandchild that left the child's process group
is out of reach on every path, as before.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import ByteReceiveStream, Process

log = logging.getLogger(__name__)

#: Bytes of stdout (and of stderr) kept; the rest is read and dropped.
MAX_OUTPUT = 8 * 1024 * 1024

#: Seconds between TERM and KILL when the caller is cancelled rather than timed out.
CANCEL_GRACE = 0.5
#: How long before a lease ends its holder stops what it runs (TERM, `CANCEL_GRACE`,
#: KILL and the reap fit well within it), so nothing it started outlives the lease.
STOP_MARGIN = 1.0


def stop_margin(lease_seconds: float) -> float:
    """`STOP_MARGIN`, or a quarter of a lease shorter than four of them."""
    return min(STOP_MARGIN, lease_seconds / 4)


#: Variables a child may inherit from the worker. Everything else (database URLs,
#: cloud and CI secrets, CLAUDECODE) stays behind; callers add what they need.
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
            "SHELL", "SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS",
            "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def scrubbed_env(
    extra: Mapping[str, str] | None = None,
    *,
    prefixes: Sequence[str] = (),
    source: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The worker's environment reduced to `BASE_ENV`, `LC_*` and `prefixes`, plus `extra`."""
    source = os.environ if source is None else source
    keep = (*prefixes, "LC_")
    env = {k: v for k, v in source.items() if k in BASE_ENV or k.startswith(keep)}
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class ProcessResult:
    returncode: int
    stdout: bytes
    stderr: bytes
    duration: float
    timed_out: bool

    @property
    def signal(self) -> int | None:
        """The signal that ended the child, if one did."""
        return -self.returncode if self.returncode < 0 else None


async def _drain(stream: ByteReceiveStream | None, sink: bytearray) -> None:
    if stream is None:
        return
    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError,
                             anyio.ClosedResourceError):
        async for chunk in stream:
            room = MAX_OUTPUT - len(sink)
            if room > 0:
                sink.extend(chunk[:room])


async def _feed(process: Process, data: bytes | None) -> None:
    if process.stdin is None:
        return
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        if data:
            await process.stdin.send(data)
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await process.stdin.aclose()


@functools.cache
def _setpriv() -> str | None:
    """util-linux's `setpriv`, on Linux, if it takes `--pdeathsig` (util-linux 2.33 and
    later; tried once, on a program that does nothing); None, said once, otherwise."""
    if not sys.platform.startswith("linux"):
        return None
    found = shutil.which("setpriv")
    if found is None:
        log.warning("children will not die with this worker (no `setpriv`: install "
                    "util-linux); a killed worker leaves its runs to their time limits")
        return None
    nothing = shutil.which("true") or sys.executable  # the cheapest program that exits 0
    try:
        tried = subprocess.run([found, "--pdeathsig", "KILL", "--", nothing, *(
                                   ["-c", ""] if nothing == sys.executable else [])],
                               capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        tried = subprocess.CompletedProcess([], 1, b"", str(exc).encode())
    if tried.returncode != 0:
        log.warning("children will not die with this worker (%s cannot set a death "
                    "signal: %s); a killed worker leaves its runs to their time limits",
                    found, tried.stderr.decode(errors="replace").strip()[:200])
        return None
    return found


def _program(name: str, env: Mapping[str, str] | None, cwd: str | Path | None) -> str:
    """The file exec would run for `name`, searched as `subprocess` does (the child's
    PATH; a name with a slash relative to `cwd`). As exec says: `PermissionError` for a
    file it may not run, `FileNotFoundError` when there is none."""
    if os.sep in name:
        candidates = [Path(cwd or ".") / name]
    else:
        candidates = [Path(folder) / name
                      for folder in os.get_exec_path(dict(env) if env is not None else None)]
    denied = False
    for path in candidates:
        if path.is_file():
            if os.access(path, os.X_OK):
                return name if os.sep in name else str(path)
            denied = True
    code = errno.EACCES if denied else errno.ENOENT
    raise (PermissionError if denied else FileNotFoundError)(code, os.strerror(code), name)


async def _open(argv: list[str], **kwargs: object) -> Process:
    setpriv = _setpriv()
    if setpriv is not None:
        env, cwd = kwargs.get("env"), kwargs.get("cwd")
        program = _program(argv[0], env if isinstance(env, Mapping) else None,
                           cwd if isinstance(cwd, str | Path) else None)
        argv = [setpriv, "--pdeathsig", "KILL", "--", program, *argv[1:]]
    return await anyio.open_process(argv, **kwargs)  # type: ignore[arg-type]


def _signal_group(pid: int, sig: int) -> None:
    # The group id is the child's pid (start_new_session). Until the child is reaped
    # its pid cannot be reused, so this never hits a stranger.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _stop(process: Process, kill_grace: float) -> None:
    """TERM the group, KILL it after `kill_grace`, and reap the child."""
    _signal_group(process.pid, signal.SIGTERM)
    with anyio.move_on_after(kill_grace):
        await process.wait()
    _signal_group(process.pid, signal.SIGKILL)
    await process.wait()


async def run_process(
    argv: Sequence[str],
    *,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    time_limit: float,
    kill_grace: float = 2.0,
) -> ProcessResult:
    """Run `argv` to completion or until `time_limit` seconds pass (then the group dies).

    Raises `OSError` (e.g. `FileNotFoundError`) when the program cannot be started.
    Cancelling the caller kills the group too (TERM, then KILL after at most
    `CANCEL_GRACE`), shielded, before the cancellation propagates.
    """
    started = time.monotonic()
    stdout, stderr = bytearray(), bytearray()
    timed_out = False
    process = await _open(
        list(argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_drain, process.stdout, stdout)
            tg.start_soon(_drain, process.stderr, stderr)
            tg.start_soon(_feed, process, stdin)
            with anyio.move_on_after(time_limit) as scope:
                await process.wait()
            if scope.cancelled_caught:
                timed_out = True
                await _stop(process, kill_grace)
            # Grandchildren that outlived the child would hold the pipes open; one that
            # left the group cannot be killed, so stop reading after a moment.
            _signal_group(process.pid, signal.SIGKILL)
            tg.cancel_scope.deadline = anyio.current_time() + 1.0
    finally:
        if process.returncode is None:  # cancelled (or failed) while the child runs
            with anyio.CancelScope(shield=True):
                await _stop(process, min(kill_grace, CANCEL_GRACE))
        with anyio.CancelScope(shield=True):
            await process.aclose()
    assert process.returncode is not None
    return ProcessResult(process.returncode, bytes(stdout), bytes(stderr),
                         time.monotonic() - started, timed_out)


#: The one way to start a child in its own process group (with the death signal) and
#: the one way to stop that group (TERM, KILL after the grace, reap): the streaming
#: runner of Claude runs (echo.work.runs.watch) uses them as `run_process` does.
open_child = _open
stop_group = _stop
signal_group = _signal_group
drain_into = _drain
feed_stdin = _feed
