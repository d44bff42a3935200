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

Concurrent publishes on one `Publisher` are combined (group commit): while a
round is in flight the next callers queue, and the next round writes them all in
one INSERT (one transaction, one audit statement, one hold of the ordering lock)
and announces them in one Redis round trip. The order per message is unchanged:
commit, then PUBLISH, then mark.
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
        self._queue: list[_Job] = []
        self._leading = False
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
        """Commit `messages` in one transaction, then announce them together.

        Concurrent calls on one publisher are combined (group commit): while one
        round (INSERT+commit, PUBLISH) is in flight, later calls queue, and the next
        round writes all of them in ONE statement. Each call still returns only after
        its own rows are committed and announced, with its own ids and receivers.
        """
        if not messages:
            return Published([], 0, True, self.transport.name)
        for m in messages:
            m.check_size(self.settings.max_body_bytes)
        if self.transport.in_transaction:
            return await self._publish_in_transaction(messages)
        job = _Job(messages)
        self._queue.append(job)
        if self._leading:
            try:
                await job.wake.wait()
            except BaseException:
                if job.outcome is None:  # not written: withdraw it, pass the lead on
                    if job in self._queue:
                        self._queue.remove(job)
                    if job.lead:
                        self._hand_over()
                raise
            if job.outcome is not None:
                return job.result()
            # Woken to lead the next round: our job is still queued.
        self._leading = True
        try:
            # Shielded: the callers queued in this round wait on it. It is bounded by
            # the database and Redis timeouts.
            with anyio.CancelScope(shield=True):
                jobs, self._queue = self._queue, []
                await self._round(jobs)
        finally:
            self._hand_over()
        return job.result()

    def _hand_over(self) -> None:
        """After a round: wake the first queued caller to lead the next one."""
        if self._queue:
            first = self._queue[0]
            first.lead = True
            first.wake.set()
        else:
            self._leading = False

    async def _round(self, jobs: list[_Job]) -> None:
        """Write, announce and mark the messages of `jobs`; settle every job."""
        messages = [m for job in jobs for m in job.messages]
        try:
            inserted = await self.store.insert(messages)
        except BaseException as exc:
            for job in jobs:
                job.settle(exc)
            raise
        notices: list[Notice] = []
        owners: list[int] = []  # notices[k] belongs to jobs[owners[k]]
        start = 0
        for j, job in enumerate(jobs):
            job.inserted = inserted[start:start + len(job.messages)]
            start += len(job.messages)
            for m, i in zip(job.messages, job.inserted, strict=True):
                if i.new:
                    notices.append(Notice.of(m, i.id))
                    owners.append(j)
        published = True
        counts = [0] * len(notices)
        if notices:
            try:
                counts = await self.transport.publish_counts(notices)
            except TransportUnavailable as exc:
                if not self._transport_down:
                    log.warning("message(s) stored but not announced: %s; the outbox relay "
                                "will announce them", exc)
                self._transport_down = True
                published = False
            except BaseException as exc:
                for job in jobs:
                    job.settle(exc)
                raise
        if published and notices:
            if self._transport_down:
                self._transport_down = False
                if self.relay is not None:
                    self.relay.kick()
            try:
                await self._mark([n.db_id for n in notices])
            except BaseException as exc:  # only inline marking (publisher not entered)
                for job in jobs:
                    job.settle(exc)
                raise
        receivers = [0] * len(jobs)
        for j, c in zip(owners, counts, strict=True):
            receivers[j] += c
        name = self.transport.name
        for j, job in enumerate(jobs):
            fresh = any(i.new for i in job.inserted)
            job.settle(Published([i.id for i in job.inserted], receivers[j],
                                 published or not fresh, name))

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


class _Job:
    """One publish call waiting for (or leading) a round."""

    __slots__ = ("inserted", "lead", "messages", "outcome", "wake")

    def __init__(self, messages: Sequence[Message]) -> None:
        self.messages = messages
        self.inserted: list[Inserted] = []
        self.wake = anyio.Event()
        self.lead = False
        self.outcome: Published | BaseException | None = None

    def settle(self, outcome: Published | BaseException) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.wake.set()

    def result(self) -> Published:
        outcome = self.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome


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
