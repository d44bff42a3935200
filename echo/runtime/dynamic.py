"""DynamicSupervisor: children started on demand, each restarted on its own.

    pool = await DynamicSupervisor(max_children=8).start()
    worker = await pool.start_child(ChildSpec("job-42", lambda: Worker(42), restart="transient"))
    await pool.terminate_child(worker)        # by process, or by spec id
    await pool.count_children()               # {"specs": ..., "active": ..., ...}

It follows `Supervisor`'s rules with the ``one_for_one`` strategy only: restart types,
intensity (``max_restarts`` within ``max_seconds``, then an exit with
``("shutdown", SupervisorEscalation(...))``),
backoff, and shutdown in reverse start order. Two differences, both Elixir's:

- a child that is not restarted (temporary, transient after a normal exit, or
  terminated with `terminate_child`) is forgotten rather than kept as a spec;
- `start_child` beyond ``max_children`` raises `MaxChildrenReached`, and a child that
  fails to start raises its `StartError` to the caller while the supervisor carries on.

Ids need not be unique: `terminate_child` with an id stops the oldest child with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from echo.runtime._core import Process
from echo.runtime._exceptions import MaxChildrenReached, StartError
from echo.runtime.child_spec import ChildSpec
from echo.runtime.supervisor_base import SupervisorBase, _Child, _Failed

__all__ = ["DynamicSupervisor"]


@dataclass(frozen=True, slots=True)
class _StartChild:
    spec: ChildSpec


class DynamicSupervisor(SupervisorBase):
    """A supervisor whose children are added at run time (see the module doc)."""

    _forget_finished = True

    def __init__(
        self,
        *,
        max_children: int | None = None,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            strategy="one_for_one",
            max_restarts=max_restarts,
            max_seconds=max_seconds,
            name=name,
            clock=clock,
        )
        if max_children is not None and max_children < 0:
            raise ValueError("max_children must be >= 0")
        self.max_children = max_children

    async def start_child(self, spec: ChildSpec) -> Process:
        """Start a child from ``spec`` and return its process once it is ready.

        Raises `MaxChildrenReached` when full and `StartError` if the child fails to start.
        """
        result: Process = await self._ask(_StartChild(spec), timeout=None)
        return result

    async def handle_call(self, request: Any) -> Any:
        if isinstance(request, _StartChild):
            if self.max_children is not None and len(self._children) >= self.max_children:
                return _Failed(MaxChildrenReached(self.max_children))
            child = _Child(request.spec)
            try:
                await self._start_child(child)
            except StartError as err:
                return _Failed(err)
            self._children.append(child)
            return child.process
        return await super().handle_call(request)
