"""Service: an anyio-style long-running function as a supervised child.

    async def serve(port: int, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED):
        listener = await bind(port)
        task_status.started()          # from here on, the child counts as started
        await listener.serve_forever()

    ChildSpec("http", lambda: Service(serve, 8080))

Many components are naturally written the anyio way (`tg.start(component.run)`):
a subscriber loop, a heartbeat, a worker pool. `Service` lets a supervisor own
them with no adapter code: the child is *started* when the function calls
``task_status.started()`` (so ordered, synchronous start still holds), returning
is a ``"normal"`` exit, raising is a crash, and stopping cancels the function, so
its ``finally`` blocks and shielded clean-up run as they would under a task group.

A component that can wind down gracefully (a worker pool finishing its running
work) passes ``graceful=component.stop``: a stop then calls it instead of
cancelling, the function returns when it is done, and the child exits with the
reason asked for. The shutdown timeout in the child spec still bounds the wait.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from anyio.abc import TaskStatus

from echo.runtime._core import NORMAL, ExitReason, Process

__all__ = ["Service"]

ServiceFn = Callable[..., Awaitable[object]]


class _Started(TaskStatus[Any]):
    def __init__(self, process: Service) -> None:
        self._process = process
        self._done = False

    def started(self, value: Any = None) -> None:
        if not self._done:
            self._done = True
            self._process.value = value
            self._process._ready()


class Service(Process):
    """Runs ``fn(*args, task_status=...)`` as a child (see the module doc)."""

    def __init__(
        self,
        fn: ServiceFn,
        *args: Any,
        name: str | None = None,
        graceful: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(name=name or getattr(fn, "__qualname__", None))
        self._fn = fn
        self._args = args
        self._graceful = graceful
        self._stop_reason: ExitReason | None = None
        self.value: Any = None
        """What the function passed to ``task_status.started(value)``."""

    def _request_stop(self, reason: ExitReason) -> None:
        if self._graceful is None:
            super()._request_stop(reason)
            return
        if self._stop_reason is None:
            self._stop_reason = reason
            self._graceful()

    async def _main(self) -> ExitReason:
        await self._fn(*self._args, task_status=_Started(self))
        return self._stop_reason if self._stop_reason is not None else NORMAL
