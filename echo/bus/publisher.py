"""Dual write: commit, then announce, then mark published.

`Publisher.publish` follows the order the design fixes: insert the message and
commit, then announce it on the transport, then mark it published. A failure
after the commit can no longer lose the message:

- Redis down: the publish still succeeds (the row is committed, left with
  `published_at IS NULL`) and the announcement reports `published=False`.
- A crash between commit and PUBLISH: same state, same outcome.

The outbox relay (`echo.bus.relay`) finds those rows and announces them. Receivers
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

Concurrent publishes on one `Publisher` are combined (group commit, `echo.bus.batcher`):
while a round is in flight the next callers queue, and the next round writes them all
in one INSERT (one transaction, one audit statement, one hold of the ordering lock).

Over Redis each notice carries its message, the id committed just before it and a
signature under the namespace's key (see `echo.bus.wire`), so subscribers can hand
messages over without reading them back from Postgres.

Run it like every other component, as a service (``await tg.start(pub.run)``, or
``Service(pub.run)`` under a supervisor), or as ``async with Publisher(...) as pub``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus

from echo.bus.batcher import GroupCommit, Job, Signal
from echo.bus.envelope import Message
from echo.bus.relay import OutboxRelay
from echo.bus.store import Inserted, MessageStore
from echo.bus.transport import Transport, make_transport
from echo.bus.wire import Notice
from echo.db import Database
from echo.errors import StoreUnavailable, TransportUnavailable
from echo.listener import Listener
from echo.slices import BusSettings

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


_Job = Job[Message, Published]


class Publisher:
    """Publishes messages. Run it as a service (`run`), or use it as
    `async with Publisher(settings.bus, database) as pub`.

    Starting it starts the background announcer and marker; stopping announces what
    is still queued, flushes the marks and closes a transport the publisher created
    itself. A publisher that is not running does each step inline.
    """

    def __init__(
        self, settings: BusSettings, database: Database, transport: Transport | None = None, *,
        listener: Listener | None = None, mark_interval: float = 0.05,
        relay: OutboxRelay | None = None,
    ) -> None:
        self.db = database
        self.settings = settings
        self.store = MessageStore(database)
        self._own_transport = transport is None
        self.transport = transport or make_transport(self.settings, database, listener=listener)
        self.mark_interval = mark_interval
        self.relay = relay
        self._pending: list[int] = []
        self._batcher: GroupCommit[Message, Published] = GroupCommit(self._round)
        self._wake = anyio.Event()
        self._outbox: list[_Announcement] = []
        self._out_wake = anyio.Event()
        self._closing = False
        self._announcer_done = anyio.Event()
        self._rounds_queued = 0
        self._rounds_announced = 0
        self._announced = Signal()  # only `drain` waits for it
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
            await self._announce_the_rest()
        # The body's own exception propagates as itself, not wrapped in a group:
        # the task group only ever held the background tasks, cancelled here.
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        self._tg = None
        with anyio.CancelScope(shield=True):
            await self._mark_the_rest()
        return None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Publish until cancelled: the service form (``Service(pub.run)``, or
        ``await tg.start(pub.run)``). Stopping announces and marks what was committed,
        as leaving ``async with`` does, whichever way the task is cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._marker)
            tg.start_soon(self._announcer)
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                # Done inside the task group: a task cancelled from outside anyio (a
                # supervisor's stop) may not get past the group's exit to run more.
                with anyio.CancelScope(shield=True):
                    await self._announce_the_rest()
                    await self._mark_the_rest()
                tg.cancel_scope.cancel()
        self._tg = None

    async def _announce_the_rest(self) -> None:
        """Committed rows go out before the publisher closes. Bounded by the Redis
        timeouts; what cannot go out now is left to the outbox relay."""
        self._closing = True
        self._out_wake.set()
        with anyio.move_on_after(self.settings.command_timeout + 1):
            await self._announcer_done.wait()

    async def _mark_the_rest(self) -> None:
        try:
            await self.flush()
        except StoreUnavailable as error:
            log.warning("could not mark %d message(s) published: %s; the relay will "
                        "announce them again", len(self._pending), error)
        if self._own_transport:
            await self.transport.aclose()

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
        return await self._batcher.submit(messages, confirm=confirm or self._tg is None)

    async def _round(self, jobs: list[_Job]) -> None:
        """Write the messages of `jobs`; settle the jobs that do not wait for their
        announcement and queue the announcement (or make it now, when not entered)."""
        messages = [m for job in jobs for m in job.items]
        await self._signing_key()
        inserted = await self.store.insert(messages)  # an error settles every job (batcher)
        out = _Announcement([], [], jobs)
        start = 0
        for j, job in enumerate(jobs):
            job.written = written = inserted[start:start + len(job.items)]
            start += len(job.items)
            out.fresh.append(any(i.new for i in written))
            notices = _notices(job.items, written)
            out.notices += notices
            out.owners += [j] * len(notices)
            if not job.confirm:
                job.settle(Published(_ids(job), None, None, self.transport.name))
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
                self._announced = Signal()
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
                job.settle(Published(_ids(job), receivers[j], published or not out.fresh[j], name))

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


def _ids(job: _Job) -> list[int]:
    return [i.id for i in job.written]


def _notices(messages: Sequence[Message], inserted: Sequence[Inserted]) -> list[Notice]:
    return [Notice.of(m, i.id, prev=i.prev, created_at=i.created_at)
            for m, i in zip(messages, inserted, strict=True) if i.new]
