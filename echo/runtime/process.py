"""OSProcess: an operating-system process as a supervised child.

    ChildSpec("web", lambda: OSProcess(
        ["python", "-m", "http.server", "8000"],
        ready=r"Serving HTTP",            # a regex searched in each stdout line
        start_timeout=10,
        log_path="logs/web.log",          # stdout and stderr, appended, mode 0600
    ), shutdown=5)

It follows the same rules as an actor, with these meanings:

- **Started** means *ready*, not spawned: `start()` returns when a stdout line matches
  ``ready`` (a regex), or when the ``ready`` callback (``async def (OSProcess)``)
  returns, or at once if neither is given. Exiting first, or not being ready within
  ``start_timeout`` seconds, fails the start (`StartError` / `StartTimeout`) and kills
  the process.
- **Exit**: status 0 is ``"normal"``; anything else is a crash with reason
  `ProcessExited` (negative status: killed by that signal). A supervisor restarts it by
  the usual restart types and intensity.
- **Stop** sends SIGTERM to the process group, waits the shutdown timeout, then sends
  SIGKILL; the exit reason is the one asked for, or ``"killed"`` after SIGKILL.

The process is spawned from an argument list (never a shell) in its own session, so it
leads its own process group: signals reach its children too, and whatever is left of
the group is killed when the process exits, so a restart never leaks processes. The
process is always reaped before the `OSProcess` counts as exited (no zombies).
Without ``log_path`` the output is inherited (a ``ready`` regex needs a pipe, whose
lines are then copied to this process's stdout). With ``log_ready_line=False`` the
line that matched ``ready`` is a protocol line and is not copied anywhere.

With ``die_with_parent=True`` the process does not outlive this one, even when this
one is SIGKILLed: on Linux the kernel kills it (PR_SET_PDEATHSIG), and everywhere it
is given a pipe whose write end only this process holds (its fd in the
``ECHO_PARENT_FD`` variable; `echo.runtime.deathsig.watch_parent` reads it), so a
child that watches it sees EOF when this process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio

from echo.runtime._core import NORMAL, ExitReason, Process
from echo.runtime._exceptions import ProcessExited, RuntimeFault, StartTimeout
from echo.runtime.deathsig import PARENT_FD_ENV, die_with_parent, parent_pipe

__all__ = ["OSProcess"]

ReadyCheck = Callable[["OSProcess"], Awaitable[object]]
_LINE_LIMIT = 1 << 20


class OSProcess(Process):
    """A subprocess run from ``argv`` as a supervised child (see the module doc)."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        ready: str | re.Pattern[str] | ReadyCheck | None = None,
        start_timeout: float = 30.0,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        log_ready_line: bool = True,
        name: str | None = None,
        die_with_parent: bool = False,
    ) -> None:
        if isinstance(argv, str) or not argv:
            raise ValueError("argv must be a non-empty list of arguments (no shell is used)")
        super().__init__(name=name or os.path.basename(argv[0]))
        self.argv = [str(arg) for arg in argv]
        self._pattern = re.compile(ready) if isinstance(ready, str) else None
        if isinstance(ready, re.Pattern):
            self._pattern = ready
        self._check: ReadyCheck | None = ready if callable(ready) else None
        self.start_timeout = start_timeout
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.log_path = log_path
        self.log_ready_line = log_ready_line
        self._proc: asyncio.subprocess.Process | None = None
        self._stop_reason: ExitReason | None = None
        self._log_fd: int | None = None
        self.die_with_parent = die_with_parent

    @property
    def pid(self) -> int | None:
        """The OS pid (also the process group id) once spawned."""
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit status once reaped (negative: the signal that killed it)."""
        return self._proc.returncode if self._proc is not None else None

    def _request_stop(self, reason: ExitReason) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
        if self._proc is None:
            self._kill(reason)
        elif self._proc.returncode is None:
            self._signal_group(signal.SIGTERM)

    def _signal_group(self, signum: int) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signum)

    async def _main(self) -> ExitReason:
        if self.log_path is not None:
            self._log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        extra: dict[str, Any] = {}
        pipe: tuple[int, int] | None = None
        env = self.env
        if self.die_with_parent:
            pipe = parent_pipe()
            env = {**(os.environ if env is None else env), PARENT_FD_ENV: str(pipe[0])}
            extra = {"pass_fds": (pipe[0],), "preexec_fn": die_with_parent(os.getpid())}
        try:
            output: int | None = self._log_fd
            try:
                self._proc = proc = await asyncio.create_subprocess_exec(
                    *self.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE if self._pattern else output,
                    stderr=output,
                    cwd=self.cwd,
                    env=env,
                    start_new_session=True,
                    limit=_LINE_LIMIT,
                    **extra,
                )
            finally:
                if pipe is not None:
                    os.close(pipe[0])
            if self._log_fd is not None and self._pattern is None:
                os.close(self._log_fd)
                self._log_fd = None
            try:
                return await self._supervise(proc)
            finally:
                with anyio.CancelScope(shield=True):
                    if proc.returncode is None:
                        self._signal_group(signal.SIGKILL)
                    await proc.wait()
                    self._signal_group(signal.SIGKILL)
        finally:
            if pipe is not None:
                os.close(pipe[1])
            if self._log_fd is not None:
                os.close(self._log_fd)
                self._log_fd = None

    async def _supervise(self, proc: asyncio.subprocess.Process) -> ExitReason:
        ready = True
        with anyio.move_on_after(self.start_timeout) as scope:
            if self._pattern is not None:
                ready = await self._await_line(proc, self._pattern)
            elif self._check is not None:
                ready = await self._await_check(proc, self._check)
        if scope.cancelled_caught:
            raise StartTimeout(self.name, self.start_timeout)
        if ready:
            self._ready()
        code = await self._finish(proc)
        if self._stop_reason is not None:
            return self._stop_reason
        if not ready:
            return ProcessExited(self.argv[0], code) if code else NORMAL
        return NORMAL if code == 0 else ProcessExited(self.argv[0], code)

    async def _await_line(self, proc: asyncio.subprocess.Process, pattern: re.Pattern[str]) -> bool:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            if pattern.search(line.decode(errors="replace")):
                if self.log_ready_line:
                    self._copy(line)
                return True
            self._copy(line)
        return False

    async def _await_check(self, proc: asyncio.subprocess.Process, check: ReadyCheck) -> bool:
        outcome: list[Any] = []

        async def watch_exit() -> None:
            await proc.wait()
            tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_exit)
            try:
                await check(self)
                outcome.append(True)
            except Exception as exc:
                outcome.append(exc)
            tg.cancel_scope.cancel()
        if outcome and isinstance(outcome[0], Exception):
            raise RuntimeFault(f"{self!r}: readiness check failed") from outcome[0]
        return bool(outcome)

    async def _finish(self, proc: asyncio.subprocess.Process) -> int:
        if proc.stdout is None:
            return await proc.wait()
        stdout = proc.stdout
        drained = anyio.Event()

        async def pump() -> None:
            while chunk := await stdout.read(65536):
                self._copy(chunk)
            drained.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            code = await proc.wait()
            # A grandchild may hold the pipe open: the exit is what counts, so the rest
            # of the output gets a moment, not a veto.
            with anyio.move_on_after(0.5):
                await drained.wait()
            tg.cancel_scope.cancel()
        return code

    def _copy(self, data: bytes) -> None:
        if self._log_fd is not None:
            os.write(self._log_fd, data)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
