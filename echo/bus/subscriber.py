"""Subscriber: one role's inbox, delivered exactly once per process and in id order.

A role receives `messages:all`, `messages:<role>` and any extra channels. Messages
are handed over in id order, strictly after the role's cursor: from the table
(`id > cursor`, read at start, after a reconnection, on a poll, for a plain notice)
or straight from a signed notice (below). Because ids commit in id order
(002_messages.sql), the cursor is a complete summary of what was handled, and that
makes deduplication exact with O(1) memory: a notice at or below the cursor is a
duplicate (a relay re-announcement, a notice for a message a catch-up already read)
and is dropped without a query. A plain notice (`db_id` and routing, see
`echo.bus.wire`) is only a wake-up call: the message is read from the table.

Live delivery without a read. The subscriber follows the namespace's whole feed
(`Transport.subscribe_all`: the Redis pattern `*`, or one namespace-wide NOTIFY
channel), so it sees the notice of every message, and a signed notice carries its
message and the id committed just before it (`prev`; see 007_bus_chain.sql). When
`prev` is the cursor, nothing can lie between them: the message is handed over (if
it is on one of the role's channels) straight from the notice and the cursor moves
to its id, with no query. Notices that arrive out of order (two publishers over
Redis) wait in a `ChainBuffer` (`echo.bus.chain`) until the chain reaches them; a gap
that lasts longer than `gap_grace` (a publisher died between commit and PUBLISH, a
notice without a signature or without its body) is closed by reading the table, which
then moves the cursor to the highest committed id.

The cursor moves in memory after the handler returns, and is written to
`agent_cursors` shortly after (coalesced, at most every `cursor_flush_interval`,
and once more on shutdown). So processing is once per process, and at least once
across a crash, where at most that interval is handed over again.

Failure modes:
- start: catch-up from the cursor holds `run`'s `started` for at most
  `settings.catchup_timeout`; past that the subscriber starts and catches up in
  the background.
- transport down (Redis stopped, or silent behind a partition: the subscription's
  keepalive PINGs notice that within about 2 s, see `RedisTransport._read`): the
  subscription reconnects on its own; in the meantime the table is polled every
  `settings.poll_interval` and the subscriber reports the transport's component
  (`redis`) degraded, saying Redis is unreachable; after every (re)connection it
  catches up and the component is ok again.
- Postgres down: `state` is `degraded`, `last_error` says why, and reads are
  retried with capped backoff. The subscriber never dies of it.
- a malformed or oversized notice: logged, counted in `stats.malformed`, dropped.
- the handler raises: the subscriber fails (a supervisor restarts it); the
  message was not acknowledged, so it is handed over again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import anyio
from anyio.abc import TaskStatus

from echo.bus.chain import ChainBuffer
from echo.bus.channels import broadcast_channel, role_channel
from echo.bus.envelope import StoredMessage
from echo.bus.store import MessageStore
from echo.bus.transport import Received, Subscription, Transport, make_transport
from echo.bus.wire import Notice, parse_notice
from echo.db import Database
from echo.degradation import Condition, Reporter
from echo.errors import InvalidMessage, StoreUnavailable
from echo.listener import Listener
from echo.runtime import Backoff
from echo.runtime.ticks import until_tick
from echo.slices import BusSettings

log = logging.getLogger(__name__)

Handler = Callable[[StoredMessage], Awaitable[None]]


@dataclass
class SubscriberStats:
    received: int = 0     # notices that arrived on the transport
    delivered: int = 0    # messages handed to the handler (and acknowledged)
    duplicates: int = 0   # notices for messages already delivered
    malformed: int = 0    # notices that failed to parse (dropped)
    caught_up: bool = False
    lag: int = 0          # highest id announced minus the cursor (0 once drained)
    cursor: int = 0
    polls: int = 0        # table reads not prompted by a notice
    reads: int = 0        # table reads of any cause
    live: int = 0         # messages handed over from their notice, without a read
    gaps: int = 0         # reads that closed a gap in the chain
    unverified: int = 0   # notices with a signature that did not verify (read instead)
    db_errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Subscriber:
    """Delivers a role's messages to `handler`. Run it with `await tg.start(sub.run)`."""

    def __init__(
        self, settings: BusSettings, database: Database, role: str, handler: Handler, *,
        channels: Sequence[str] = (), transport: Transport | None = None,
        listener: Listener | None = None, batch: int = 500,
        cursor_flush_interval: float = 0.1, backoff_max: float = 5.0, gap_grace: float = 0.02,
        reporter: Reporter | None = None,
    ) -> None:
        self.db = database
        self.settings = settings
        self.role = role
        self.handler = handler
        self.channels = list(dict.fromkeys([broadcast_channel(), role_channel(role), *channels]))
        self.store = MessageStore(database)
        self._own_transport = transport is None
        self.transport = transport or make_transport(self.settings, database, listener=listener)
        self.batch = batch
        self.cursor_flush_interval = cursor_flush_interval
        self.backoff = Backoff(initial=self.settings.poll_interval, max=backoff_max)
        self.gap_grace = gap_grace
        self._chain = self.transport.carries_messages
        self._channel_set = frozenset(self.channels)
        self._chained: ChainBuffer[Notice] = ChainBuffer(gap_grace)  # verified, ahead
        self._key: bytes | None = None
        self.stats = SubscriberStats()
        self.condition = Condition("messages", reporter, log)
        component = self.transport.component
        #: The subscription's own health (Redis reachable or not), where the transport
        #: does not report it elsewhere.
        self.link = Condition(component, reporter, log) if component else None
        self._cursor: int | None = None  # None until read from the database
        self._saved = 0
        self._heard = 0
        self._kicked = True  # a read is due whatever was heard (start, poll, reconnect)
        self._sub: Subscription | None = None
        self._wake = anyio.Event()
        self._dirty = anyio.Event()
        self._caught_up = anyio.Event()

    # ------------------------------------------------------------ state

    @property
    def cursor(self) -> int:
        return self._cursor or 0

    @property
    def state(self) -> str:
        """`starting`, `degraded` (Postgres failing), `polling` (transport away) or `live`."""
        if self.condition.degraded:
            return "degraded"
        if not self.stats.caught_up:
            return "starting"
        if self._sub is None or not self._sub.connected:
            return "polling"
        return "live"

    async def wait_caught_up(self) -> None:
        await self._caught_up.wait()

    def kick(self) -> None:
        """Read the table now (after a reconnection, or when told something is new)."""
        self._kicked = True
        self._wake.set()

    # ------------------------------------------------------------ running

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._listen)
                tg.start_soon(self._pump)
                tg.start_soon(self._poll)
                tg.start_soon(self._cursor_writer)
                with anyio.move_on_after(self.settings.catchup_timeout):
                    await self._caught_up.wait()
                if not self._caught_up.is_set():
                    log.warning("%s: catch-up took over %.1fs; starting, catching up behind",
                                self.role, self.settings.catchup_timeout)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                try:
                    await self._save_cursor()
                except StoreUnavailable as exc:
                    log.warning("%s: cursor %d not saved (%s); those messages will be "
                                "handed over again", self.role, self.cursor, exc)
                if self._own_transport:
                    await self.transport.aclose()

    async def _listen(self) -> None:
        if self._chain:
            subscription = self.transport.subscribe_all()
        else:
            subscription = self.transport.subscribe(self.channels)
        async with subscription as sub:
            self._sub = sub
            sub.on_connect(self.kick)
            async for received in sub:
                self._on_notice(received)

    def _on_notice(self, received: Received) -> None:
        self.stats.received += 1
        try:
            notice = parse_notice(received.data, self._key)
        except InvalidMessage as exc:
            self.stats.malformed += 1
            log.warning("%s: dropped a notice on %s: %s", self.role, received.channel, exc)
            return
        if self._cursor is not None and notice.db_id <= self._cursor:
            self.stats.duplicates += 1
            return
        if notice.verified:  # the signature covers the channel, whatever it came on
            self._chained.add(notice)
            self.stats.lag = max(0, notice.db_id - self.cursor)
            self._wake.set()
            return
        if notice.sig is not None and self._key is not None:
            self.stats.unverified += 1
        if notice.channel not in self._channel_set:
            return  # another role's (unsigned) notice, seen on the namespace-wide feed
        self._heard = max(self._heard, notice.db_id)
        self.stats.lag = max(0, self._heard - self.cursor)
        self._wake.set()

    async def _pump(self) -> None:
        retry = self.backoff.attempts()
        while True:
            self._wake = anyio.Event()
            try:
                if self._read_due():
                    self._kicked = False
                    await self._drain()
                await self._follow()
            except StoreUnavailable as exc:
                self._note_db_error(exc)
                with anyio.move_on_after(retry.next_delay()):
                    await self._wake.wait()
                continue
            retry.reset()
            if self._read_due():
                continue
            # Sleep until a notice, a kick, or the end of a gap's grace.
            with anyio.move_on_after(self._chained.gap_wait()):
                await self._wake.wait()

    def _read_due(self) -> bool:
        """Whether the table must be read: at start, when asked (poll, reconnection,
        kick), for a plain notice beyond the cursor, or for a gap past its grace. A
        plain notice heard before the last read began was for a row it returned (or
        for none: see `_drain`), so it does not count."""
        if self._cursor is None or self._kicked or self._heard > self._cursor:
            return True
        return self._chained.gap_due()

    async def _follow(self) -> None:
        """Hand over the chained notices that start at the cursor, in id order."""
        assert self._cursor is not None
        while (notice := self._chained.next(self._cursor)) is not None:
            if notice.channel in self._channel_set:
                if not notice.carries_body:  # too large to carry: read it
                    self._chained.add(notice)
                    self._kicked = True
                    return
                await self.handler(notice.stored())
                self.stats.delivered += 1
                self.stats.live += 1
            self._cursor = notice.db_id
            self.stats.cursor = notice.db_id
            self._dirty.set()
        self.stats.duplicates += self._chained.settle(self._cursor)
        self.stats.lag = max(0, self._heard - self._cursor, self._chained.highest() - self._cursor)

    async def _drain(self) -> None:
        """Hand over everything after the cursor, in id order, from the table; then move
        the cursor to the highest committed id, which settles every id below it."""
        if self._cursor is None:
            if self._chain:
                self._key = await self.store.bus_key()
            self._cursor = self._saved = await self.store.read_cursor(self.role)
            self.stats.cursor = self._cursor
        if self._chained.close_gap():
            self.stats.gaps += 1
        while True:
            heard_before = self._heard
            # `settled`, from the same snapshot: every id up to it has committed (or never
            # will), so once the rows after the cursor are handed over, the cursor may move
            # up to it.
            messages, settled = await self.store.read_after(self._cursor, self.channels,
                                                            self.batch)
            self.stats.reads += 1
            self._recovered()
            for message in messages:
                await self.handler(message)
                self._cursor = message.id
                self.stats.delivered += 1
                self.stats.cursor = message.id
                self._dirty.set()
            if len(messages) < self.batch:
                if settled > self._cursor:
                    self._cursor = self.stats.cursor = settled
                    self._dirty.set()
                break
        # A notice that arrived after the query above is for a row it did not return,
        # and must still prompt the next read. But one heard before the query was for a
        # row already committed (notices follow commits, ids commit in order), so if the
        # read did not return it, no such row exists for this role: a forged or foreign
        # id must not leave a phantom lag or a read on every wake-up.
        if self._heard == heard_before:
            self._heard = min(self._heard, self._cursor)
        self.stats.lag = max(0, self._heard - self._cursor)
        if not self.stats.caught_up:
            self.stats.caught_up = True
            self._caught_up.set()

    async def _poll(self) -> None:
        """Read the table on a timer while the transport is away, and now and then
        even when it is up, in case a notice was lost without a disconnection."""
        safety_every = 10
        ticks = 0
        while True:
            await anyio.sleep(until_tick(self.settings.poll_interval))  # with the other timers
            ticks += 1
            transport_away = self._sub is None or not self._sub.connected
            self._note_link(transport_away)
            if transport_away or ticks % safety_every == 0:
                self.stats.polls += 1
                self.kick()

    async def _cursor_writer(self) -> None:
        while True:
            await self._dirty.wait()
            await anyio.sleep(self.cursor_flush_interval)
            self._dirty = anyio.Event()
            try:
                await self._save_cursor()
            except StoreUnavailable as exc:
                self._note_db_error(exc)
                self._dirty.set()
                await anyio.sleep(self.settings.poll_interval)

    async def _save_cursor(self) -> None:
        cursor = self._cursor
        if cursor is not None and cursor > self._saved:
            await self.store.advance_cursor(self.role, cursor)
            self._saved = cursor

    @property
    def last_error(self) -> str | None:
        return self.condition.last_error

    def _note_db_error(self, exc: StoreUnavailable) -> None:
        self.stats.db_errors += 1
        self.condition.trouble(str(exc))

    def _recovered(self) -> None:
        self.condition.ok()

    def _note_link(self, away: bool) -> None:
        """Report the subscription's health: degraded once an attempt to reach Redis
        has failed (not while the first one is still under way), ok once it is live."""
        if self.link is None:
            return
        why = self._sub.last_error if self._sub is not None else None
        if not away:
            self.link.ok()
        elif why is not None:
            self.link.trouble(f"{self.transport.name.capitalize()} is unreachable, reading "
                              f"Postgres every {self.settings.poll_interval:g}s: {why}")
