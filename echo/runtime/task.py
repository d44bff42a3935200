"""Tasks: run one coroutine function as a process and collect its result (Elixir's Task).

    task = Task.async_(fetch, url)
    page = await task.await_(timeout=5.0)     # TaskTimeout, and the task is shut down
    maybe = await task.yield_(timeout=0.1)    # None on timeout; the task keeps running
    await task.shutdown()                     # cancel; returns a result that beat it

The result of ``await_``/``yield_`` is the function's return value; if the function
raised, the same exception is raised to the awaiting caller (in Elixir the linked
caller would crash with it). A task is a `Process`: it can be monitored, linked, or
supervised (``ChildSpec(id, lambda: Task(fn), restart="transient")``), and it exits
``"normal"`` on return, with the exception on a crash, or ``"shutdown"``/``"killed"``
when shut down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, cast

import anyio

from echo.runtime._core import KILLED, NORMAL, SHUTDOWN, ExitReason, Process, Shutdown
from echo.runtime._exceptions import RuntimeFault, TaskTimeout

T = TypeVar("T")

__all__ = ["Task"]


class Task(Process, Generic[T]):
    """One coroutine function run as a process (see the module doc)."""

    def __init__(
        self, fn: Callable[..., Awaitable[T]], *args: Any, name: str | None = None
    ) -> None:
        super().__init__(name=name or getattr(fn, "__name__", None))
        self._fn = fn
        self._args = args
        self._result: T | None = None
        self._finished = False

    @classmethod
    def async_(cls, fn: Callable[..., Awaitable[T]], *args: Any) -> Task[T]:
        """Start ``fn(*args)`` now, without waiting (must run inside an event loop)."""
        task = cls(fn, *args)
        task._spawn()
        return task

    def _spawn(self) -> None:
        if self._task is not None:
            raise RuntimeFault(f"{self!r} was already started")
        self._spawn_task(asyncio.get_running_loop())

    async def _main(self) -> ExitReason:
        self._ready()
        self._result = await self._fn(*self._args)
        self._finished = True
        return NORMAL

    async def await_(self, timeout: float | None = 5.0) -> T:  # noqa: ASYNC109
        """The result; after ``timeout`` seconds shut the task down and raise `TaskTimeout`."""
        with anyio.move_on_after(timeout):
            await self.wait()
        if not self._dead:
            await self.shutdown("brutal_kill")
            assert timeout is not None
            raise TaskTimeout(self, timeout)
        return self._outcome()

    async def yield_(self, timeout: float | None = 5.0) -> T | None:  # noqa: ASYNC109
        """The result, or None if it is not ready within ``timeout`` (the task keeps going)."""
        with anyio.move_on_after(timeout):
            await self.wait()
        if not self._dead:
            return None
        return self._outcome()

    async def shutdown(self, timeout: Shutdown = 5.0) -> T | None:  # noqa: ASYNC109
        """Cancel the task unless it finished; return its result if it had.

        Cancellation lets the coroutine run its cleanup (``finally`` blocks); this waits
        up to ``timeout`` seconds for that (``"infinity"``: no limit). With
        ``"brutal_kill"`` the exit reason is ``"killed"`` instead of ``"shutdown"``.
        """
        if self._task is None:
            raise RuntimeFault(f"{self!r} was never started")
        if not self._dead:
            brutal = timeout == "brutal_kill"
            self._kill(KILLED if brutal else SHUTDOWN)
            limit = None if isinstance(timeout, str) else timeout
            with anyio.move_on_after(limit):
                await self.wait()
        return self._result if self._finished else None

    def _outcome(self) -> T:
        if self._finished:
            return cast(T, self._result)
        reason = self._reason
        if isinstance(reason, BaseException):
            raise reason
        raise RuntimeFault(f"{self!r} exited with {reason!r} before returning")
