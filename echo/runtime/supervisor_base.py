"""SupervisorBase: what `Supervisor` and `DynamicSupervisor` share.

The children's state, the restart of a child and its group by strategy, the restart
intensity and the escalation past it, the backoff, and shutdown in reverse start
order: the rules that echo/runtime/supervisor.py's docstring sets out, in one place,
so that the static and the dynamic supervisor cannot drift apart. Each subclass adds
only how its children come to be (a fixed list, or `start_child`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from echo.runtime._core import (
    KILLED,
    SHUTDOWN,
    Down,
    ExitReason,
    MonitorRef,
    Process,
    Shutdown,
    demonitor,
    is_normal,
    logger,
    monitor,
)
from echo.runtime._exceptions import StartError, SupervisorEscalation, UnknownChild
from echo.runtime.actor import Actor
from echo.runtime.child_spec import ChildInfo, ChildSpec, ChildType

Strategy: TypeAlias = Literal["one_for_one", "one_for_all", "rest_for_one"]

__all__ = ["SupervisorBase"]


@dataclass(eq=False, slots=True)
class _Child:
    spec: ChildSpec
    process: Process | None = None
    ref: MonitorRef | None = None
    failures: deque[float] = field(default_factory=deque)
    attempt: int = 0
    started_at: float = 0.0
    token: int = 0

    @property
    def type(self) -> ChildType:
        if self.spec.type is not None:
            return self.spec.type
        return "supervisor" if isinstance(self.process, SupervisorBase) else "worker"

    @property
    def shutdown(self) -> Shutdown:
        if self.spec.shutdown is not None:
            return self.spec.shutdown
        return self.process.default_shutdown if self.process is not None else 5.0

    def info(self) -> ChildInfo:
        return ChildInfo(self.spec.id, self.process, self.type, self.spec.restart)


@dataclass(frozen=True, slots=True)
class _Restart:
    group: tuple[_Child, ...]
    culprit: _Child
    token: int


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


_WHICH = "which_children"
_COUNT = "count_children"


@dataclass(frozen=True, slots=True)
class _Terminate:
    key: Any


class SupervisorBase(Actor):
    """What `Supervisor` and `DynamicSupervisor` share: child state, restarts, intensity."""

    default_shutdown: Shutdown = "infinity"
    _forget_finished = False

    def __init__(
        self,
        *,
        strategy: Strategy,
        max_restarts: int,
        max_seconds: float,
        name: str | None,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(name=name)
        if strategy not in ("one_for_one", "one_for_all", "rest_for_one"):
            raise ValueError(f"unknown strategy {strategy!r}")
        self.strategy: Strategy = strategy
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self._clock = clock
        self._children: list[_Child] = []
        self._by_ref: dict[MonitorRef, _Child] = {}
        self._restarts: deque[float] = deque()

    # -- public, answered in the supervisor's own task --------------------------------

    async def which_children(self) -> list[ChildInfo]:
        """The children in start order, running or not."""
        result: list[ChildInfo] = await self._ask(_WHICH)
        return result

    async def count_children(self) -> dict[str, int]:
        """``specs``, ``active``, ``workers`` and ``supervisors``, as in Elixir."""
        result: dict[str, int] = await self._ask(_COUNT)
        return result

    async def terminate_child(self, key: Any) -> None:
        """Stop the child with this id (or this process) using its shutdown rule."""
        await self._ask(_Terminate(key), timeout=None)

    async def _ask(self, request: Any, timeout: float | None = 5.0) -> Any:  # noqa: ASYNC109
        result = await self.call(request, timeout)
        if isinstance(result, _Failed):
            raise result.error
        return result

    async def handle_call(self, request: Any) -> Any:
        if request == _WHICH:
            return [child.info() for child in self._children]
        if request == _COUNT:
            types = [child.type for child in self._children]
            return {
                "specs": len(self._children),
                "active": sum(1 for c in self._children if c.process is not None),
                "workers": types.count("worker"),
                "supervisors": types.count("supervisor"),
            }
        if isinstance(request, _Terminate):
            child = self._find(request.key)
            if child is None:
                return _Failed(UnknownChild(request.key))
            await self._terminate_child(child)
            if self._forget_finished:
                self._children.remove(child)
            return None
        return await super().handle_call(request)

    async def handle_info(self, message: Any) -> None:
        if isinstance(message, Down):
            child = self._by_ref.pop(message.ref, None)
            if child is not None:
                await self._child_exited(child, message.reason)
        elif isinstance(message, _Restart):
            if message.token == message.culprit.token and message.culprit in self._children:
                await self._start_group(list(message.group), message.culprit)
        else:
            await super().handle_info(message)

    async def terminate(self, reason: ExitReason) -> None:
        await self._terminate_all(self._children)

    async def _main(self) -> ExitReason:
        try:
            reason = await super()._main()
            if isinstance(reason, SupervisorEscalation):
                # OTP's supervisor exits with `shutdown` once it has given up, so that a
                # transient parent spec leaves it down; the term keeps the details.
                logger.error("%r gave up: %s", self, reason)
                return (SHUTDOWN, reason)
            return reason
        finally:
            # Only reached with children alive when this supervisor was killed: its
            # children must not outlive it.
            for child in reversed(self._children):
                if child.process is not None:
                    child.process._kill(KILLED)

    # -- the machinery -----------------------------------------------------------------

    def _find(self, key: Any) -> _Child | None:
        for child in self._children:
            if child.process is key or (not isinstance(key, Process) and child.spec.id == key):
                return child
        return None

    async def _start_child(self, child: _Child) -> None:
        process = child.spec.start()
        try:
            await process.start()
        except StartError as err:
            # Unwrap a plain "this process failed" error; keep one that names a deeper
            # child (a nested supervisor) or says more (a StartTimeout).
            plain = type(err) is StartError and err.child_id == process.name
            raise StartError(child.spec.id, err.reason if plain else err) from err
        child.process = process
        child.started_at = self._clock()
        ref = child.ref = monitor(process, self.send)
        self._by_ref[ref] = child

    async def _terminate_child(self, child: _Child) -> None:
        process = child.process
        child.token += 1
        if process is None:
            return
        shutdown = child.shutdown
        if child.ref is not None:
            demonitor(child.ref)
            self._by_ref.pop(child.ref, None)
        child.process = child.ref = None
        await process.stop(SHUTDOWN, shutdown)

    async def _terminate_all(self, children: Sequence[_Child]) -> None:
        for child in reversed(children):
            await self._terminate_child(child)

    async def _child_exited(self, child: _Child, reason: ExitReason) -> None:
        uptime = self._clock() - child.started_at
        child.process = child.ref = None
        restart = child.spec.restart
        if restart == "temporary" or (restart == "transient" and is_normal(reason)):
            if restart == "temporary" or self._forget_finished:
                self._children.remove(child)
            return
        self._count_restart(child, reason)
        group = self._group(child)
        await self._terminate_all([c for c in group if c is not child])
        for sibling in group:
            if sibling is not child and sibling.spec.restart == "temporary":
                self._children.remove(sibling)
        group = [c for c in group if c is child or c.spec.restart != "temporary"]
        backoff = child.spec.backoff
        if backoff is not None and uptime >= backoff.max:
            child.attempt = 0
        await self._start_group(group, child, delayed=True)

    def _group(self, child: _Child) -> list[_Child]:
        if self.strategy == "one_for_one":
            return [child]
        if self.strategy == "one_for_all":
            return list(self._children)
        return self._children[self._children.index(child) :]

    def _count_restart(self, child: _Child, reason: ExitReason) -> None:
        now = self._clock()
        threshold = now - self.max_seconds
        for window in (self._restarts, child.failures):
            window.append(now)
            while window[0] < threshold:
                window.popleft()
        if len(self._restarts) > self.max_restarts:
            raise SupervisorEscalation(
                child.spec.id,
                len(child.failures),
                reason,
                intensity=len(self._restarts),
                max_restarts=self.max_restarts,
                max_seconds=self.max_seconds,
            )

    async def _start_group(
        self, group: list[_Child], culprit: _Child, delayed: bool = False
    ) -> None:
        """(Re)start ``group`` in order; a failure counts as a crash of that child."""
        while True:
            backoff = culprit.spec.backoff
            if delayed and backoff is not None:
                delay = backoff.delay(culprit.attempt)
                culprit.attempt += 1
                culprit.token += 1
                self.send_after(delay, _Restart(tuple(group), culprit, culprit.token))
                return
            for index, child in enumerate(group):
                if child.process is not None:
                    continue
                try:
                    await self._start_child(child)
                except StartError as err:
                    self._count_restart(child, err.reason)
                    await self._terminate_all(group[:index])
                    culprit, delayed = child, True
                    break
            else:
                return
