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
`ChildSpec` lives in echo/runtime/child_spec.py, and the machinery this supervisor
shares with `DynamicSupervisor` in echo/runtime/supervisor_base.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from echo.runtime._core import SHUTDOWN, ExitReason, Process
from echo.runtime._exceptions import StartError, SupervisorEscalation, UnknownChild
from echo.runtime.child_spec import ChildSpec
from echo.runtime.supervisor_base import Strategy, SupervisorBase, _Child, _Failed

__all__ = ["Supervisor", "gave_up"]


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
