"""The process kernel: lifecycle, exit reasons, monitors and links.

A `Process` is anything a supervisor can run: an `Actor`, a `Supervisor`, a `Task`, an
`OSProcess`. Each runs as one asyncio task that it owns, and ends with exactly one
*exit reason*:

- ``"normal"``: it finished its work;
- ``"shutdown"`` or ``("shutdown", term)``: it was asked to stop;
- ``"killed"``: it was cancelled (``brutal_kill``, or a shutdown timeout ran out);
- an exception: it crashed. The exception *is* the reason and is never swallowed: it
  is logged, handed to monitors and links, and a supervisor decides what happens next.

The exit is final and observed in three ways, as in Erlang:

- `monitor(target, notify)` calls ``notify(Down(ref, target, reason))`` once when the
  target exits, or at once if it already has. Actors use it to get a `Down` in
  ``handle_info``; supervisors and registries use it to learn about exits.
- `link(a, b)` ties two processes: when one exits with any reason but ``"normal"``,
  the other is killed with the same reason, unless it traps exits (an actor with
  ``trap_exits = True``), in which case it receives an `Exit` message instead.
- `Process.wait()` returns the reason to whoever awaits it.

Stopping is cooperative first and forceful second: `stop(reason, timeout)` asks the
process to finish (an actor runs ``terminate``, an OS process gets SIGTERM), waits up to
``timeout`` seconds, then cancels the task. ``"brutal_kill"`` cancels at once and
``"infinity"`` never cancels. The task belongs to the process, and the process belongs to
its supervisor, which stops it before exiting itself: the supervision tree is the
structure that keeps every task owned. ``async with process:`` and `Process.run()` give
a top-level process the same guarantee.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias

import anyio

from echo.runtime._exceptions import RuntimeFault, StartError

logger = logging.getLogger("echo.runtime")

ExitReason: TypeAlias = str | tuple[str, Any] | BaseException
"""``"normal"``, ``"shutdown"``, ``("shutdown", term)``, ``"killed"`` or an exception."""

Shutdown: TypeAlias = float | Literal["brutal_kill", "infinity"]
"""Seconds to wait for a graceful stop, or ``"brutal_kill"`` / ``"infinity"``."""

NORMAL = "normal"
SHUTDOWN = "shutdown"
KILLED = "killed"
NOPROC = "noproc"


def is_normal(reason: object) -> bool:
    """True for the exits a transient child is not restarted for (Elixir's rule).

    ``"normal"``, ``"shutdown"`` and ``("shutdown", term)`` are normal. Everything else,
    ``"killed"`` included, is abnormal.
    """
    if isinstance(reason, str):
        return reason in (NORMAL, SHUTDOWN)
    return isinstance(reason, tuple) and len(reason) == 2 and reason[0] == SHUTDOWN


_refs = itertools.count(1)


@dataclass(frozen=True, slots=True)
class MonitorRef:
    """Identifies one monitor, so that it can be removed and its `Down` recognised."""

    id: int
    target: Process


@dataclass(frozen=True, slots=True)
class Down:
    """Delivered once to a monitor when its target exits."""

    ref: MonitorRef
    process: Process
    reason: ExitReason


@dataclass(frozen=True, slots=True)
class Exit:
    """Delivered to an actor that traps exits when a linked process exits."""

    process: Process
    reason: ExitReason


class Process:
    """Base of everything a supervisor can run (the *child protocol*).

    A subclass implements ``_main()``, which runs inside the process's own task, calls
    ``self._ready()`` once it counts as started, and returns the exit reason (raising
    means a crash). It may override ``_request_stop(reason)`` to make stopping graceful;
    the default cancels the task. Everything else (start, stop, wait, monitors, links)
    is shared, so a custom child behaves exactly like the built-in ones.
    """

    default_shutdown: Shutdown = 5.0
    """What a supervisor uses when the child's spec names no shutdown."""

    def __init__(self, *, name: str | None = None) -> None:
        self.name = name
        self._task: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        self._exited: asyncio.Event | None = None
        self._dead = False
        self._reason: ExitReason | None = None
        self._kill_reason: ExitReason | None = None
        self._monitors: dict[MonitorRef, Callable[[Down], object]] | None = None
        self._links: set[Process] | None = None

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name is not None else ""
        return f"<{type(self).__name__}{label} at {id(self):#x}>"

    @property
    def alive(self) -> bool:
        """Started and not yet exited."""
        return self._task is not None and not self._dead

    @property
    def exit_reason(self) -> ExitReason | None:
        """The exit reason once exited, else None."""
        return self._reason

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> Self:
        """Spawn the process and return once it is ready (an actor's ``init`` finished).

        Raises `StartError` with the reason if it exits before it is ready.
        """
        if self._task is not None:
            raise RuntimeFault(f"{self!r} was already started")
        loop = asyncio.get_running_loop()
        started = self._started = loop.create_future()
        self._spawn_task(loop)
        try:
            await started
        except asyncio.CancelledError:
            self._kill(KILLED)
            raise
        return self

    async def stop(
        self,
        reason: ExitReason = SHUTDOWN,
        timeout: Shutdown | None = None,  # noqa: ASYNC109 - OTP's API: the shutdown rule
    ) -> ExitReason:
        """Ask the process to exit with ``reason``; force it after ``timeout``.

        ``timeout=None`` uses the process's `default_shutdown` (5 s for workers,
        ``"infinity"`` for supervisors, which bound their children's shutdowns).

        Returns the actual exit reason (``"killed"`` if it had to be cancelled). Called
        from the process's own task, it only requests the stop, which then happens once
        the current handler returns.
        """
        task = self._task
        if task is None:
            raise RuntimeFault(f"{self!r} was never started")
        if timeout is None:
            timeout = self.default_shutdown
        if not self._dead:
            if asyncio.current_task() is task:
                self._request_stop(reason)
                return reason
            if timeout == "brutal_kill":
                self._kill(KILLED)
            else:
                self._request_stop(reason)
                if timeout != "infinity":
                    with anyio.move_on_after(timeout):
                        await self.wait()
                    self._kill(KILLED)
        return await self.wait()

    async def wait(self) -> ExitReason:
        """Wait for the exit and return its reason (it does not raise for crashes)."""
        if not self._dead:
            if self._exited is None:
                self._exited = asyncio.Event()
            await self._exited.wait()
        assert self._reason is not None
        return self._reason

    async def run(self) -> ExitReason:
        """Start, then wait until the process exits; stop it if the waiter is cancelled.

        This is how to run a tree until it is stopped (``await sup.run()``): it returns a
        normal reason, and raises the reason of an abnormal exit, or the error a
        ``("shutdown", error)`` carries (a supervisor that gave up exits with
        ``("shutdown", SupervisorEscalation(...))``, as OTP's exits with ``shutdown``).
        """
        await self.start()
        try:
            reason = await self.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.stop(SHUTDOWN, self.default_shutdown)
            raise
        if isinstance(reason, BaseException):
            raise reason
        if isinstance(reason, tuple) and isinstance(reason[1], BaseException):
            raise reason[1]  # ("shutdown", error): it gave up (a supervisor past intensity)
        return reason

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.stop(SHUTDOWN, self.default_shutdown)

    # -- the child protocol (for subclasses) --------------------------------------------

    async def _main(self) -> ExitReason:
        """The body of the process; returns its exit reason."""
        self._ready()
        return NORMAL

    def _ready(self) -> None:
        """Mark the process started: `start()` returns to its caller."""
        started = self._started
        if started is not None and not started.done():
            started.set_result(None)

    def _request_stop(self, reason: ExitReason) -> None:
        """Ask for a graceful exit with ``reason``; the default cancels at once."""
        self._kill(reason)

    def _after_exit(self, reason: ExitReason) -> None:
        """Release what the process holds (an actor fails its pending calls)."""

    def _kill(self, reason: ExitReason) -> None:
        """Cancel the task; it exits with ``reason`` (the first kill's reason wins)."""
        task = self._task
        if task is not None and not self._dead and not task.done():
            if self._kill_reason is None:
                self._kill_reason = reason
            task.cancel()

    def _spawn_task(self, loop: asyncio.AbstractEventLoop) -> None:
        task = self._task = loop.create_task(self._lifecycle(), name=repr(self))
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # A task cancelled before its first step never enters `_lifecycle`'s try.
        if not self._dead:
            self._exit(self._kill_reason if self._kill_reason is not None else KILLED)

    async def _lifecycle(self) -> None:
        reason: ExitReason
        try:
            reason = await self._main()
        except asyncio.CancelledError:
            reason = self._kill_reason if self._kill_reason is not None else KILLED
        except Exception as exc:
            reason = exc
        except BaseException as exc:
            self._exit(exc)
            raise
        self._exit(reason)

    def _exit(self, reason: ExitReason) -> None:
        self._dead = True
        self._reason = reason
        if isinstance(reason, BaseException):
            logger.error("%r crashed: %r", self, reason, exc_info=reason)
        started = self._started
        if started is not None and not started.done():
            err = reason if isinstance(reason, StartError) else StartError(self.name, reason)
            started.set_exception(err)
        # Each observer is guarded: one faulty callback must not hide the exit from the
        # other monitors, the links or the waiters. Its error is logged, not raised.
        try:
            self._after_exit(reason)
        except Exception:
            logger.exception("%r: releasing after exit failed", self)
        if self._monitors:
            monitors, self._monitors = self._monitors, None
            for ref, notify in monitors.items():
                try:
                    notify(Down(ref, self, reason))
                except Exception:
                    logger.exception("%r: monitor callback %r raised", self, notify)
        if self._links:
            links, self._links = self._links, None
            for peer in links:
                if peer._links is not None:
                    peer._links.discard(self)
                try:
                    peer._exit_signal(self, reason)
                except Exception:
                    logger.exception("%r: exit signal to linked %r failed", self, peer)
        if self._exited is not None:
            self._exited.set()

    def _exit_signal(self, sender: Process, reason: ExitReason) -> None:
        """A linked process exited. Only ``"normal"`` is ignored (Erlang's rule)."""
        if reason != NORMAL:
            self._kill(reason)


def monitor(target: Process, notify: Callable[[Down], object]) -> MonitorRef:
    """Call ``notify(Down(...))`` once when ``target`` exits (at once if it has exited).

    A target that was never started is watched from its start; one that has exited is
    reported with its exit reason.
    """
    ref = MonitorRef(next(_refs), target)
    if target._dead:
        assert target._reason is not None
        notify(Down(ref, target, target._reason))
    else:
        if target._monitors is None:
            target._monitors = {}
        target._monitors[ref] = notify
    return ref


def demonitor(ref: MonitorRef) -> None:
    """Remove a monitor; a `Down` already delivered is not recalled."""
    monitors = ref.target._monitors
    if monitors is not None:
        monitors.pop(ref, None)


def link(a: Process, b: Process) -> None:
    """Tie two processes so that an abnormal exit of either one reaches the other.

    Linking to a process that has already exited delivers its exit signal at once,
    with reason ``"noproc"``.
    """
    for one, other in ((a, b), (b, a)):
        if other._dead:
            one._exit_signal(other, NOPROC)
            return
    for one, other in ((a, b), (b, a)):
        if one._links is None:
            one._links = set()
        one._links.add(other)


def unlink(a: Process, b: Process) -> None:
    """Undo `link`; harmless if they were not linked."""
    for one, other in ((a, b), (b, a)):
        if one._links is not None:
            one._links.discard(other)
