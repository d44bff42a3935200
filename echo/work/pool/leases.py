"""The lease keeper: renews the leases of the tasks a pool holds, and stops the ones it lost.

Every `lease_seconds / 3` it renews every held task in one statement. A renewal the
database confirms moves the task's deadline (`Running.valid_until`: the send time
plus the lease) and its run's cancel scope with it, `margin` before. A task missing
from the answer was rescued or cancelled by a user: its run stops at once. A renewal
that does not come back before the earliest deadline is given up, so the runs stop on
time (their scopes' deadlines pass) and the next renewal goes out as soon as the
database answers again: two attempts of a task never overlap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio

from echo.errors import StoreRejected, StoreUnavailable
from echo.work.pool.ports import PoolTasks
from echo.work.pool.running import Running

log = logging.getLogger(__name__)


class TaskLeaseKeeper:
    """The task leases of one pool (the role's own lease has echo.org.agent.lease_keeper)."""

    def __init__(self, tasks: PoolTasks, lease_seconds: float, margin: float, *,
                 held: Callable[[], list[Running]],
                 trouble: Callable[[BaseException, str], None],
                 lost: Callable[[Running], None]) -> None:
        self.tasks = tasks
        self.lease_seconds = lease_seconds
        self.margin = margin
        self.interval = max(lease_seconds / 3, 0.05)
        self._held = held
        self._trouble = trouble
        self._lost = lost

    async def run(self) -> None:
        while True:
            await anyio.sleep(self.interval)
            await self.renew()

    async def renew(self) -> None:
        """One renewal of every held task (see the module's docstring)."""
        held = self._held()
        if not held:
            return
        sent = anyio.current_time()
        owned: set[int] | None = None
        with anyio.move_on_after(max(min(r.valid_until for r in held) - sent, self.interval)):
            try:
                owned = await self.tasks.heartbeat([r.task for r in held], self.lease_seconds)
            except (StoreUnavailable, StoreRejected) as exc:
                self._trouble(exc, "renew leases")
        if owned is None:
            return
        for running in held:
            if running.task.task_id in owned:
                running.valid_until = sent + self.lease_seconds
                if running.scope is not None:
                    running.scope.deadline = running.valid_until - self.margin
            elif not running.writing:
                log.warning("task %s is no longer ours (cancelled or rescued); stopping it",
                            running.task.task_id)
                self._lost(running)
                running.cancel()
