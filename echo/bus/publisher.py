"""Dual write and the outbox relay.

`Publisher.publish` follows the order the design fixes: insert the message and
commit, then announce it on the transport, then mark it published. A failure
after the commit can no longer lose the message:

- Redis down: the publish still succeeds (the row is committed, left with
  `published_at IS NULL`) and reports 0 receivers and `published=False`.
- A crash between commit and PUBLISH: same state, same outcome.

`OutboxRelay` finds those rows (older than a small grace, `FOR UPDATE SKIP
LOCKED` so several relays share the work) and announces them. Receivers
deduplicate by `db_id`, so an announcement that happens twice is harmless.

Marking rows published is batched: a background task flushes the ids every
`mark_interval`, one UPDATE for many messages, which keeps the hot path at one
INSERT round trip plus one PUBLISH. With NOTIFY the announcement is part of the
inserting transaction and the row is born published.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import anyio
from anyio.abc import TaskGroup, TaskStatus

from echo.bus.envelope import Message, Notice
from echo.bus.store import Inserted, MessageStore
from echo.bus.transport import Transport, make_transport
from echo.db import Database
from echo.errors import StoreUnavailable, TransportUnavailable
from echo.listener import Listener

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Published:
    """The outcome of a publish: the rows' `db_ids`, how many receivers the transport
    reached (Redis counts them; NOTIFY and a down Redis give 0), and whether the
    notices went out now (False: the outbox relay will announce them)."""

    db_ids: list[int]
    receivers: int
    published: bool
    transport: str

    @property
    def db_id(self) -> int:
        return self.db_ids[0]


class Publisher:
    """Publishes messages; use as `async with Publisher(database) as pub`.

    Entering starts the background marker; leaving flushes it and closes a
    transport the publisher created itself.
    """

    def __init__(
        self, database: Database, transport: Transport | None = None, *,
        listener: Listener | None = None, mark_interval: float = 0.05,
        relay: OutboxRelay | None = None,
    ) -> None:
        self.db = database
        self.settings = database.settings
        self.store = MessageStore(database)
        self._own_transport = transport is None
        self.transport = transport or make_transport(self.settings, database, listener=listener)
        self.mark_interval = mark_interval
        self.relay = relay
        self._pending: list[int] = []
        self._wake = anyio.Event()
        self._tg: TaskGroup | None = None
        self._transport_down = False

    async def __aenter__(self) -> Publisher:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._marker)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        # The body's own exception propagates as itself, not wrapped in a group:
        # the task group only ever held the marker, which is cancelled here.
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        self._tg = None
        with anyio.CancelScope(shield=True):
            try:
                await self.flush()
            except StoreUnavailable as error:
                log.warning("could not mark %d message(s) published: %s; the relay will "
                            "announce them again", len(self._pending), error)
            if self._own_transport:
                await self.transport.aclose()
        return None

    async def publish(self, message: Message) -> Published:
        """Commit one message, announce it, and return its `db_id` (`.db_id`)."""
        return await self.publish_many([message])

    async def publish_many(self, messages: Sequence[Message]) -> Published:
        """Commit `messages` in one transaction, then announce them together."""
        if not messages:
            return Published([], 0, True, self.transport.name)
        for m in messages:
            m.check_size(self.settings.max_body_bytes)
        if self.transport.in_transaction:
            return await self._publish_in_transaction(messages)
        inserted = await self.store.insert(messages)
        notices = _notices(messages, inserted)
        if not notices:  # every one was a retry of a row that exists
            return Published([i.id for i in inserted], 0, True, self.transport.name)
        try:
            receivers = await self.transport.publish(notices)
        except TransportUnavailable as exc:
            if not self._transport_down:
                log.warning("message(s) stored but not announced: %s; the outbox relay "
                            "will announce them", exc)
            self._transport_down = True
            return Published([i.id for i in inserted], 0, False, self.transport.name)
        if self._transport_down:
            self._transport_down = False
            if self.relay is not None:
                self.relay.kick()
        await self._mark([n.db_id for n in notices])
        return Published([i.id for i in inserted], receivers, True, self.transport.name)

    async def _publish_in_transaction(self, messages: Sequence[Message]) -> Published:
        async with self.db.transaction() as conn:
            inserted = await self.store.insert(messages, published=True, conn=conn)
            receivers = await self.transport.publish_in(conn, _notices(messages, inserted))
        return Published([i.id for i in inserted], receivers, True, self.transport.name)

    async def _mark(self, ids: list[int]) -> None:
        if self._tg is None:  # not entered: mark inline
            await self.store.mark_published(ids)
            return
        self._pending.extend(ids)
        self._wake.set()

    async def flush(self) -> None:
        """Mark every announced message published now."""
        ids, self._pending = self._pending, []
        try:
            await self.store.mark_published(ids)
        except StoreUnavailable:
            self._pending[:0] = ids
            raise

    async def _marker(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await anyio.sleep(self.mark_interval)
            try:
                await self.flush()
            except StoreUnavailable as exc:
                log.warning("could not mark messages published (%s); retrying", exc)


def _notices(messages: Sequence[Message], inserted: Sequence[Inserted]) -> list[Notice]:
    return [Notice.of(m, i.id) for m, i in zip(messages, inserted, strict=True) if i.new]


class OutboxRelay:
    """Announces committed messages that were never announced.

    Runs every `interval` seconds, and at once after `kick()` (the publisher
    kicks it when Redis comes back). Rows younger than `grace` are left to
    their own publisher, which may be about to mark them.
    """

    def __init__(
        self, database: Database, transport: Transport, *, grace: float = 2.0,
        interval: float | None = None, batch: int = 500,
    ) -> None:
        self.db = database
        self.store = MessageStore(database)
        self.transport = transport
        self.grace = grace
        self.interval = interval if interval is not None else database.settings.poll_interval
        self.batch = batch
        self.relayed = 0
        self.last_error: str | None = None
        self._kick = anyio.Event()

    def kick(self) -> None:
        self._kick.set()

    async def relay_once(self) -> int:
        """Announce one batch of old unpublished rows; return how many."""
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
                self.last_error = None
            except (StoreUnavailable, TransportUnavailable) as exc:
                self.last_error = str(exc)
            with anyio.move_on_after(max(0.0, self.interval - (time.monotonic() - started))):
                await self._kick.wait()
            self._kick = anyio.Event()
