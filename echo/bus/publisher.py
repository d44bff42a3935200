"""Dual write and the outbox relay.

`Publisher.publish` follows the order the design fixes: insert the message and
commit, then announce it on the transport, then mark it published. A failure
after the commit can no longer lose the message:

- Redis down: the publish still succeeds (the row is committed, left with
  `published_at IS NULL`) and the announcement reports `published=False`.
- A crash between commit and PUBLISH: same state, same outcome.

`OutboxRelay` finds those rows (older than a small grace, `FOR UPDATE SKIP
LOCKED` so several relays share the work) and announces them. Receivers
deduplicate by `db_id`, so an announcement that happens twice is harmless.

Pipelining. Once a caller's rows are committed they are durable and will be
announced whatever happens to this process, so `publish` returns at the commit and
the announcement follows behind it, in commit order, from a background task
(`published` and `receivers` are then None). A caller that wants to know how many
receivers Redis reached passes `confirm=True` and waits for the PUBLISH too
(`echoctl broadcast` does). Marking rows published is batched the same way: one
UPDATE every `mark_interval` for many messages. So a publisher's hot path is one
INSERT round trip; the PUBLISH of one message overlaps the INSERT of the next.
With NOTIFY the announcement is part of the inserting transaction and the row is
born published. A publisher that was not entered does each step inline.

Concurrent publishes on one `Publisher` are combined (group commit): while a
round is in flight the next callers queue, and the next round writes them all in
one INSERT (one transaction, one audit statement, one hold of the ordering lock).

Over Redis each notice carries its message, the id committed just before it and a
signature under the namespace's key (see `echo.bus.envelope`), so subscribers can
hand messages over without reading them back from Postgres.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus

from echo.bus.envelope import Message, Notice
from echo.bus.store import Inserted, MessageStore
from echo.bus.transport import Transport, make_transport
from echo.db import Database
from echo.degradation import Condition, Reporter
from echo.errors import StoreUnavailable, TransportUnavailable
from echo.listener import Listener

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Published:
    """The outcome of a publish: the rows' `db_ids`, how many receivers the transport
    reached (Redis counts them; NOTIFY and a down Redis give 0), and whether the
    notices went out now (False: the outbox relay will announce them). For a publish
    that returned at its commit (`confirm=False`), `receivers` and `published` are
    None: the announcement follows behind."""

    db_ids: list[int]
    receivers: int | None
    published: bool | None
    transport: str

    @property
    def db_id(self) -> int:
        return self.db_ids[0]


@dataclass(slots=True)
class _Announcement:
    """Notices of one round waiting for the announcer, with the jobs that wait for it."""

    notices: list[Notice]
    owners: list[int]  # notices[k] belongs to jobs[owners[k]]
    jobs: list[_Job]
    fresh: list[bool] = field(default_factory=list)  # jobs[j] created a row


class Publisher:
    """Publishes messages; use as `async with Publisher(database) as pub`.

    Entering starts the background announcer and marker; leaving announces what
    is still queued, flushes the marks and closes a transport the publisher
    created itself.
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
        self._outbox: list[_Announcement] = []
        self._out_wake = anyio.Event()
        self._closing = False
        self._announcer_done = anyio.Event()
        self._rounds_queued = 0
        self._rounds_announced = 0
        self._announced = anyio.Event()
        self._key: bytes | None = None
        self._tg: TaskGroup | None = None
        self._transport_down = False

    async def __aenter__(self) -> Publisher:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._marker)
        self._tg.start_soon(self._announcer)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        with anyio.CancelScope(shield=True):
            # Committed rows go out before the publisher closes. Bounded by the Redis
            # timeouts; what cannot go out now is left to the outbox relay.
            self._closing = True
            self._out_wake.set()
            with anyio.move_on_after(self.settings.command_timeout + 1):
                await self._announcer_done.wait()
        # The body's own exception propagates as itself, not wrapped in a group:
        # the task group only ever held the background tasks, cancelled here.
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

    async def publish(self, message: Message, *, confirm: bool = False) -> Published:
        """Commit one message and return its `db_id` (`.db_id`); see `publish_many`."""
        return await self.publish_many([message], confirm=confirm)

    async def publish_many(self, messages: Sequence[Message], *, confirm: bool = False) -> Published:
        """Commit `messages` in one transaction; they are announced together.

        Returns once the rows are committed; with `confirm=True` (or on a publisher
        that was not entered) only once they are announced too, with the receivers.
        Concurrent calls on one publisher are combined (group commit): while one
        round is in flight, later calls queue, and the next round writes all of them
        in ONE statement. Each call still gets its own ids.
        """
        if not messages:
            return Published([], 0, True, self.transport.name)
        for m in messages:
            m.check_size(self.settings.max_body_bytes)
        if self.transport.in_transaction:
            return await self._publish_in_transaction(messages)
        job = _Job(messages, confirm or self._tg is None)
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
            # Woken to lead the next round: our job is still queued. (A job written by
            # someone else's round is only woken once settled.)
        self._leading = True
        try:
            # Shielded: the callers queued in this round wait on it. It is bounded by
            # the database timeouts.
            with anyio.CancelScope(shield=True):
                # One turn of the event loop first, so that callers made ready by the
                # last round (it just returned to all of them) join this one: without
                # it, rounds alternate between this caller alone and everyone else.
                await anyio.lowlevel.cancel_shielded_checkpoint()
                jobs, self._queue = self._queue, []
                await self._round(jobs)
        finally:
            self._hand_over()
        if job.outcome is None:  # waiting for its announcement (confirm=True)
            await job.done.wait()
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
        """Write the messages of `jobs`; settle the jobs that do not wait for their
        announcement and queue the announcement (or make it now, when not entered)."""
        messages = [m for job in jobs for m in job.messages]
        try:
            await self._signing_key()
            inserted = await self.store.insert(messages)
        except BaseException as exc:
            for job in jobs:
                job.settle(exc)
            raise
        out = _Announcement([], [], jobs)
        start = 0
        for j, job in enumerate(jobs):
            job.inserted = inserted[start:start + len(job.messages)]
            start += len(job.messages)
            out.fresh.append(any(i.new for i in job.inserted))
            notices = _notices(job.messages, job.inserted)
            out.notices += notices
            out.owners += [j] * len(notices)
            if not job.confirm:
                job.settle(Published([i.id for i in job.inserted], None, None, self.transport.name))
        if self._tg is None:
            await self._announce([out])
            return
        if out.notices or any(job.confirm for job in jobs):
            self._outbox.append(out)
            self._rounds_queued += 1
            self._out_wake.set()

    async def drain(self) -> None:
        """Wait until everything committed so far has been announced (or found
        unannounceable, left to the relay)."""
        target = self._rounds_queued
        while self._rounds_announced < target and self._tg is not None:
            await self._announced.wait()

    async def _announcer(self) -> None:
        """Announce queued rounds in commit order, several rounds per round trip."""
        try:
            while True:
                if not self._outbox:
                    if self._closing:
                        return
                    await self._out_wake.wait()
                    self._out_wake = anyio.Event()
                    continue
                batch, self._outbox = self._outbox, []
                await self._announce(batch)
                self._rounds_announced += len(batch)
                self._announced.set()
                self._announced = anyio.Event()
        finally:
            self._announcer_done.set()

    async def _announce(self, batch: list[_Announcement]) -> None:
        """PUBLISH the notices of `batch` in one round trip, settle the jobs that wait
        for it, and queue the ids to be marked."""
        notices = [n for out in batch for n in out.notices]
        published = True
        counts = [0] * len(notices)
        if notices:
            try:
                counts = await self.transport.publish_counts(notices, key=self._key)
            except TransportUnavailable as exc:
                if not self._transport_down:
                    log.warning("message(s) stored but not announced: %s; the outbox relay "
                                "will announce them", exc)
                self._transport_down = True
                published = False
            except BaseException as exc:
                for out in batch:
                    for job in out.jobs:
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
                for out in batch:
                    for job in out.jobs:
                        job.settle(exc)
                raise
        name = self.transport.name
        k = 0
        for out in batch:
            receivers = [0] * len(out.jobs)
            for j in out.owners:
                receivers[j] += counts[k]
                k += 1
            for j, job in enumerate(out.jobs):
                job.settle(Published([i.id for i in job.inserted], receivers[j],
                                     published or not out.fresh[j], name))

    async def _publish_in_transaction(self, messages: Sequence[Message]) -> Published:
        key = await self._signing_key()
        async with self.db.transaction() as conn:
            inserted = await self.store.insert(messages, published=True, conn=conn)
            receivers = await self.transport.publish_in(conn, _notices(messages, inserted),
                                                        key=key)
        return Published([i.id for i in inserted], receivers, True, self.transport.name)

    async def _signing_key(self) -> bytes | None:
        """The namespace's key, read once, when the transport carries messages."""
        if self._key is None and self.transport.carries_messages:
            self._key = await self.store.bus_key()
        return self._key

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
    """One publish call waiting for (or leading) a round, then for its outcome."""

    __slots__ = ("confirm", "done", "inserted", "lead", "messages", "outcome", "wake")

    def __init__(self, messages: Sequence[Message], confirm: bool) -> None:
        self.messages = messages
        self.confirm = confirm
        self.inserted: list[Inserted] = []
        self.wake = anyio.Event()  # settled, or handed the lead
        self.done = anyio.Event()  # settled
        self.lead = False
        self.outcome: Published | BaseException | None = None

    def settle(self, outcome: Published | BaseException) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.wake.set()
            self.done.set()

    def result(self) -> Published:
        outcome = self.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome


def _notices(messages: Sequence[Message], inserted: Sequence[Inserted]) -> list[Notice]:
    return [Notice.of(m, i.id, prev=i.prev, created_at=i.created_at)
            for m, i in zip(messages, inserted, strict=True) if i.new]


class OutboxRelay:
    """Announces committed messages that were never announced.

    Runs every `interval` seconds, and at once after `kick()` (the publisher
    kicks it when Redis comes back). Rows younger than `grace` are left to
    their own publisher, which may be about to mark them.
    """

    def __init__(
        self, database: Database, transport: Transport, *, grace: float = 2.0,
        interval: float | None = None, batch: int = 500, reporter: Reporter | None = None,
    ) -> None:
        self.db = database
        self.store = MessageStore(database)
        self.transport = transport
        self.grace = grace
        self.interval = interval if interval is not None else database.settings.poll_interval
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
                self.condition.ok()
            except (StoreUnavailable, TransportUnavailable) as exc:
                self.condition.trouble(str(exc))
            with anyio.move_on_after(max(0.0, self.interval - (time.monotonic() - started))):
                await self._kick.wait()
            self._kick = anyio.Event()
