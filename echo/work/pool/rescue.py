"""The rescuer: what no live worker will finish goes back to the queue.

A worker that died (or lost the database) stops renewing its leases; once a lease
expires, any pool's rescuer puts the task back (pending after the queue's backoff, or
dead once its retries are used up): the at-least-once half of the pool's promise.
The same round expires approval requests past their time, so a task that waited for a
person runs again. Either wakes the pool's claimer, since there may be work to take.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio

from echo.errors import StoreRejected, StoreUnavailable
from echo.runtime import Backoff
from echo.runtime.ticks import until_tick
from echo.work.pool.ports import PoolStores

log = logging.getLogger(__name__)


class Rescuer:
    def __init__(self, stores: PoolStores, actor: str, backoff: Backoff, interval: float, *,
                 trouble: Callable[[BaseException, str], None],
                 wake: Callable[[], None]) -> None:
        self.stores = stores
        self.actor = actor  # the audit rows' actor (`<worker prefix>:rescue`)
        self.backoff = backoff
        self.interval = interval
        self._trouble = trouble
        self._wake = wake

    async def run(self) -> None:
        while True:
            await self.sweep()
            await anyio.sleep(until_tick(self.interval))  # with the process's other timers

    async def sweep(self) -> None:
        """One round: expired leases, then expired approval requests."""
        try:
            rescued = await self.stores.tasks.rescue(actor=self.actor, backoff=self.backoff)
        except (StoreUnavailable, StoreRejected) as exc:
            self._trouble(exc, "rescue expired leases")
            rescued = {}
        if rescued:
            log.warning("rescued %d task(s) with expired leases: %s", len(rescued), rescued)
            self._wake()
        try:
            woken = await self.stores.approvals.sweep()
        except (StoreUnavailable, StoreRejected) as exc:
            self._trouble(exc, "expire approval requests")
            woken = []
        if woken:
            log.info("approval requests decided or expired: task(s) %s queued again", woken)
            self._wake()
