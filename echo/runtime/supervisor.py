"""Supervisors: start children in order, restart them by rule, give up upward.

    sup = Supervisor(
        [
            ChildSpec("store", lambda: Store(dsn)),
            ChildSpec("agent", lambda: Agent("cto"), restart="transient",
                      backoff=Backoff(initial=0.1, factor=2, max=5)),
            ChildSpec("tools", lambda: Supervisor([...]), type="supervisor"),
        ],
        strategy="rest_for_one",
    )
    await sup.run()            # runs until stopped; raises SupervisorEscalation on give-up
                               # (its exit reason is then ("shutdown", escalation))
    # or: async with sup: ...  # started inside, stopped (children in reverse) on exit

Rules (Elixir's defaults):

- **Start** is synchronous and ordered: each child's `start()` (an actor's ``init``, an
  OS process's readiness) completes before the next begins. If one fails, the children
  already started are stopped in reverse order and the supervisor's own start fails
  with `StartError(child_id, reason)`.
- **Restart types**: ``permanent`` is always restarted; ``transient`` only after an
  abnormal exit (anything but ``"normal"``, ``"shutdown"``, ``("shutdown", term)``);
  ``temporary`` never, and is forgotten once it exits.
- **Strategies**: ``one_for_one`` restarts the failed child; ``one_for_all`` stops the
  others (reverse order) and restarts them all (in order); ``rest_for_one`` does that
  for the failed child and those started after it. Temporary siblings stopped this way
  are forgotten, not restarted.
- **Intensity**: each restart is counted with the supervisor's clock. More than
  ``max_restarts`` (3) within ``max_seconds`` (5) and the supervisor stops every child
  in reverse start order and exits with ``("shutdown", SupervisorEscalation(child_id,
  restarts, last_error))``: a *shutdown*, as OTP's supervisor exits with ``shutdown``,
  so its own supervisor restarts it if its spec is ``permanent`` and leaves it down if
  ``transient``. `gave_up(reason)` returns the escalation from such a reason, and
  ``run()`` raises it, so the top level still reports the culprit child, how often it
  failed and its last error. A child that fails to restart counts as failing again.
- **Shutdown** is in reverse start order; each child gets its spec's ``shutdown``
  (5 s for workers, ``"infinity"`` for supervisors, or ``"brutal_kill"``).
- **Backoff** (an opt-in extension; OTP has none): a child with a `Backoff` is restarted
  after ``initial * factor**n`` seconds, capped at ``max``, where ``n`` counts
  consecutive restarts and resets once the child has stayed up for ``max`` seconds.

Differences from OTP: times are in seconds, not milliseconds; the reason of a
supervisor that gave up is ``("shutdown", escalation)`` where OTP's is the bare atom
``shutdown`` (the details then live only in OTP's log; here they travel with the exit,
and are logged too); restart backoff is an extension; `run()` raises that escalation
so a program's top level can print it.
``tests/unit/runtime/test_otp_differential.py`` runs the same cases through OTP 25's
own ``supervisor`` and through this one and compares the event sequences.

The supervisor is an `Actor`: exits arrive as `Down` messages from monitors and are
handled one at a time in its mailbox, so a restart never races a shutdown or a
``which_children()`` call. The clock is injectable so tests can drive time.
"""

from __future__ import annotations

import time
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
from echo.runtime.backoff import Backoff

Strategy: TypeAlias = Literal["one_for_one", "one_for_all", "rest_for_one"]
Restart: TypeAlias = Literal["permanent", "transient", "temporary"]
ChildType: TypeAlias = Literal["worker", "supervisor"]

__all__ = ["ChildInfo", "ChildSpec", "Supervisor", "gave_up"]


def gave_up(reason: ExitReason) -> SupervisorEscalation | None:
    """The `SupervisorEscalation` of a supervisor that exited by giving up, else None.

    A supervisor past its restart intensity exits with ``("shutdown", escalation)``
    (OTP's ``shutdown``, with the details kept); this reads either that or a bare
    escalation, so callers that report the culprit need not know the shape.
    """
    if isinstance(reason, SupervisorEscalation):
        return reason
    if isinstance(reason, tuple) and len(reason) == 2 and reason[0] == SHUTDOWN:
        term = reason[1]
        if isinstance(term, SupervisorEscalation):
            return term
    return None


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start and restart one child.

    ``start`` is a factory called for every (re)start; it returns an unstarted `Actor`,
    `Supervisor`, `OSProcess` or any other `Process`. ``shutdown=None`` means the
    process's default (5 s for workers, ``"infinity"`` for supervisors); ``type=None``
    is inferred from the process.
    """

    id: Any
    start: Callable[[], Process]
    restart: Restart = "permanent"
    shutdown: Shutdown | None = None
    type: ChildType | None = None
    backoff: Backoff | None = None

    def __post_init__(self) -> None:
        if self.restart not in ("permanent", "transient", "temporary"):
            raise ValueError(f"child {self.id!r}: unknown restart type {self.restart!r}")
        if self.type not in (None, "worker", "supervisor"):
            raise ValueError(f"child {self.id!r}: unknown child type {self.type!r}")
        if isinstance(self.shutdown, str) and self.shutdown not in ("brutal_kill", "infinity"):
            raise ValueError(f"child {self.id!r}: unknown shutdown {self.shutdown!r}")


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One row of `which_children()`; ``process`` is None while not running."""

    id: Any
    process: Process | None
    type: ChildType
    restart: Restart


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


class Supervisor(SupervisorBase):
    """A static supervisor over an ordered list of `ChildSpec`s (see the module doc)."""

    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            strategy=strategy,
            max_restarts=max_restarts,
            max_seconds=max_seconds,
            name=name,
            clock=clock,
        )
        ids = [spec.id for spec in children]
        duplicates = sorted({repr(i) for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate child ids: {', '.join(duplicates)}")
        self._children = [_Child(spec) for spec in children]

    async def init(self) -> None:
        for index, child in enumerate(self._children):
            try:
                await self._start_child(child)
            except StartError:
                await self._terminate_all(self._children[:index])
                raise

    async def restart_child(self, child_id: Any) -> Process:
        """Start a child that is not running (terminated, or transient and finished)."""
        result: Process = await self._ask(("restart_child", child_id), timeout=None)
        return result

    async def handle_call(self, request: Any) -> Any:
        if isinstance(request, tuple) and request[:1] == ("restart_child",):
            child = self._find(request[1])
            if child is None:
                return _Failed(UnknownChild(request[1]))
            if child.process is None:
                try:
                    await self._start_child(child)
                except StartError as err:
                    return _Failed(err)
            return child.process
        return await super().handle_call(request)
