"""The outbox relay: announces committed messages that were never announced.

The publisher commits a message and then announces it; a crash, or a Redis outage,
between the two leaves the row committed with `published_at IS NULL`. The relay finds
those rows (older than a small grace, `FOR UPDATE SKIP LOCKED` so several relays share
the work), announces them and marks them, in one transaction: a failed announcement
rolls back and the rows wait for the next round. Receivers deduplicate by `db_id`, so
an announcement that happens twice is harmless.
"""

from __future__ import annotations

import logging
import time

import anyio
from anyio.abc import TaskStatus

from echo.bus.store import MessageStore
from echo.bus.transport import Transport
from echo.bus.wire import Notice
from echo.db import Database
from echo.degradation import Condition, Reporter
from echo.errors import StoreUnavailable, TransportUnavailable
from echo.runtime.ticks import until_tick
from echo.slices import BusSettings

log = logging.getLogger(__name__)

#: The relay's default interval in poll intervals. It only catches what a publisher
#: committed but never announced (a crash between the two; Redis away, after which
#: the publisher kicks it); subscribers read the table on their own safety poll too,
#: so a relay round every second per agent bought nothing but statements.
IDLE_INTERVAL_FACTOR = 5


class OutboxRelay:
    """Announces committed messages that were never announced.

    Runs every `interval` seconds (default 5 poll intervals), and at once after `kick()` (the publisher
    kicks it when Redis comes back). Rows younger than `grace` are left to
    their own publisher, which may be about to mark them.
    """

    def __init__(
        self, settings: BusSettings, database: Database, transport: Transport, *, grace: float = 2.0,
        interval: float | None = None, batch: int = 500, reporter: Reporter | None = None,
    ) -> None:
        self.db = database
        self.store = MessageStore(database)
        self.transport = transport
        self.grace = grace
        self.interval = (interval if interval is not None
                         else settings.poll_interval * IDLE_INTERVAL_FACTOR)
        self.batch = batch
        self.relayed = 0
        self.condition = Condition("relay", reporter, log)
        self._kick = anyio.Event()

    @property
    def last_error(self) -> str | None:
        return self.condition.last_error

    def kick(self) -> None:
        self._kick.set()

    async def relay_once(self) -> int:
        """Announce one batch of old unpublished rows; return how many. An idle round
        is one read (`any_unpublished`): six agents each run a relay."""
        if not await self.store.any_unpublished(older_than=self.grace):
            return 0
        # Outside the transaction: with a pool of one connection (an agent's), a read
        # the transport made inside it would wait for the connection it holds.
        await self.transport.prepare()
        async with self.db.transaction() as conn:
            rows = await self.store.lock_unpublished(conn, older_than=self.grace, limit=self.batch)
            if not rows:
                return 0
            notices = [Notice.of_row(r) for r in rows]
            if self.transport.in_transaction:
                await self.transport.publish_in(conn, notices)
            else:
                await self.transport.publish(notices)  # a failure rolls back: rows stay
            await self.store.mark_published([n.db_id for n in notices], conn=conn)
        self.relayed += len(notices)
        log.info("outbox relay announced %d message(s)", len(notices))
        return len(notices)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Relay until cancelled. Database and transport outages are waited out."""
        task_status.started()
        while True:
            started = time.monotonic()
            try:
                while await self.relay_once() == self.batch:
                    pass
                self.condition.ok()
            except (StoreUnavailable, TransportUnavailable) as exc:
                self.condition.trouble(str(exc))
            wait = max(0.0, self.interval - (time.monotonic() - started))
            with anyio.move_on_after(min(wait, until_tick(self.interval))):  # with the other timers
                await self._kick.wait()
            self._kick = anyio.Event()
