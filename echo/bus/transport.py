"""Transports: how the notice of a committed message reaches the receivers.

Two implementations behind one interface, chosen by `settings.redis_url`:

- `RedisTransport`: PUBLISH to `<namespace>:<organisation id>:<channel>`
  (`echo.bus.channels`); subscriptions reconnect with capped backoff when Redis
  drops, and PING a quiet connection so that a silent partition is noticed in about
  2 s. `publish` returns how many subscribers Redis reached.
- `NotifyTransport`: Postgres NOTIFY, for a setup without Redis. Its notices are
  sent inside the inserting transaction (`in_transaction`), so they go out exactly
  at commit and the row is published the moment it exists. Receiving rides on the
  process's shared `Listener`. NOTIFY cannot count receivers (reports 0) and has
  no pattern subscriptions, so signed notices also go to one namespace-wide
  channel (`EVERY`), which is what `subscribe_all` listens on.

A transport only ever carries `Notice`s (`echo.bus.wire`): a plain one (`db_id` and
routing) on the message's own channel, and, where the transport `carries_messages`,
a signed one that also carries the message, its predecessor's id and an HMAC, which
`subscribe_all` sees. Losing one is never fatal: every `Subscription` reports
(re)connections through `on_connect`, and the subscriber then catches up from
Postgres.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import anyio
import redis.asyncio as aioredis
import redis.exceptions
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from echo.bus.channels import wire_channel
from echo.bus.redis_client import redis_client
from echo.bus.store import MessageStore, notify_in
from echo.bus.wire import Notice
from echo.config import Settings, redact_url
from echo.db import Connection, Database
from echo.errors import StoreUnavailable, TransportUnavailable
from echo.listener import Listener, notify_channel
from echo.runtime import Backoff

log = logging.getLogger(__name__)

#: What a dead, restarting or unreachable Redis raises through redis-py.
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
    TimeoutError,
)
#: What ends one subscription attempt: Redis away, or the database that names the
#: channels away (before the organisation's id was read once).
_SUBSCRIPTION_ERRORS: tuple[type[BaseException], ...] = (*REDIS_ERRORS, StoreUnavailable)
_BUFFER = 10_000
#: PUBLISH each (channel, payload) pair of ARGV in order; the receiver count of each.
_PUBLISH_SCRIPT = """
local counts = {}
for i = 1, #ARGV, 2 do
    counts[#counts + 1] = redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return counts
"""
_NOTIFY_NAME_MAX = 63  # Postgres truncates identifiers (channel names) past this


@dataclass(frozen=True, slots=True)
class Received:
    """One notification off the wire: its logical channel and the raw payload."""

    channel: str
    data: bytes | str


class Subscription:
    """Notifications for a set of channels. Iterate it; it reconnects on its own.

    `on_connect` callbacks run after every (re)connection and after any
    notification had to be dropped: both mean "catch up from Postgres".
    """

    def __init__(
        self, receive: MemoryObjectReceiveStream[Received], is_connected: Callable[[], bool]
    ) -> None:
        self._receive = receive
        self._is_connected = is_connected
        self._callbacks: list[Callable[[], None]] = []
        self.connects = 0
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._is_connected()

    def on_connect(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every (re)connection; at once if connected already."""
        self._callbacks.append(callback)
        if self.connected:
            callback()

    def _signal(self) -> None:
        for callback in self._callbacks:
            callback()

    def __aiter__(self) -> AsyncIterator[Received]:
        return self._receive.__aiter__()


@contextlib.asynccontextmanager
async def _background() -> AsyncIterator[TaskGroup]:
    """A task group for helper tasks that are cancelled when the body ends. An error
    of the body propagates as itself, not wrapped in an exception group."""
    error: BaseException | None = None
    async with anyio.create_task_group() as tg:
        try:
            yield tg
        except BaseException as exc:  # re-raised below, unwrapped
            error = exc
        tg.cancel_scope.cancel()
    if error is not None:
        raise error


class Transport(abc.ABC):
    """Publishes notices and opens subscriptions. One per process is enough."""

    name: str = "transport"
    #: True when notices must be published inside the inserting transaction.
    in_transaction: bool = False
    #: True when notices carry their messages, signed (`Notice.encode(key)`), and
    #: `subscribe_all` sees every one of them.
    carries_messages: bool = False
    #: The component under which a subscriber reports its subscription as degraded
    #: while it is down; None where another component already does (NOTIFY rides on
    #: the Listener, which reports itself).
    component: str | None = None

    async def publish(self, notices: Sequence[Notice], *, key: bytes | None = None) -> int:
        """Announce `notices`; return how many receivers were reached (0 if unknown).
        Raises `TransportUnavailable` when the transport is down."""
        return sum(await self.publish_counts(notices, key=key))

    @abc.abstractmethod
    async def publish_counts(
        self, notices: Sequence[Notice], *, key: bytes | None = None
    ) -> list[int]:
        """Announce `notices` in order; how many receivers each reached (0 if unknown).
        With `key` (and `carries_messages`), notices that can be are signed and carry
        their message. Raises `TransportUnavailable` when the transport is down."""

    async def publish_in(
        self, conn: Connection, notices: Sequence[Notice], *, key: bytes | None = None
    ) -> int:
        """Announce inside the caller's transaction (only for `in_transaction` transports)."""
        raise TypeError(f"{self.name} does not publish inside a transaction; check in_transaction first")

    @abc.abstractmethod
    def subscribe(
        self, channels: Sequence[str], *, patterns: Sequence[str] = ()
    ) -> contextlib.AbstractAsyncContextManager[Subscription]:
        """A `Subscription` to logical `channels` (and glob `patterns`, Redis only)."""

    @abc.abstractmethod
    def subscribe_all(self) -> contextlib.AbstractAsyncContextManager[Subscription]:
        """A `Subscription` that sees the signed notice of every message of the
        namespace (what a subscriber that follows the chain needs)."""

    async def prepare(self) -> None:  # noqa: B027 - optional hook
        """Read from the database what announcing needs (Redis: the organisation's id),
        once. A caller that announces while it holds a connection of a small pool (the
        outbox relay, inside its transaction) calls this first, outside it."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release the transport's connections."""


class RedisTransport(Transport):
    """Redis pub/sub. The URL may be `rediss://` (TLS), may carry a password, and may
    name Sentinels (`redis+sentinel://`), whose current master is used."""

    name = "redis"
    carries_messages = True
    component = "redis"

    def __init__(
        self, settings: Settings, *, database: Database | None = None,
        keepalive: float = 1.0, keepalive_timeout: float = 1.0,
        backoff_initial: float = 0.05, backoff_max: float = 2.0,
    ) -> None:
        """`database` is the organisation's, where its id is read (the channel names
        carry it: `echo.bus.channels`). A subscription that hears nothing for
        `keepalive` seconds PINGs Redis and counts it gone when `keepalive_timeout`
        more pass without an answer."""
        if not settings.redis_url:
            raise TransportUnavailable("no Redis configured (ECHO_REDIS_URL is unset)")
        self.settings = settings
        self.url = settings.redis_url
        self.db = database
        self.keepalive = keepalive
        self.keepalive_timeout = keepalive_timeout
        self.backoff = Backoff(initial=backoff_initial, max=backoff_max)
        self._prefix: str | None = None
        # One immediate retry: after a Redis restart the pooled connection is stale and
        # the first command on it fails, while a fresh one works. More retries would
        # only stall a publish that the outbox relay can finish later anyway.
        self.client = redis_client(
            settings,
            socket_connect_timeout=min(settings.connect_timeout, 2.0),
            socket_timeout=min(settings.command_timeout, 5.0),
            retry=Retry(NoBackoff(), 1),
        )
        self._publish_script = self.client.register_script(_PUBLISH_SCRIPT)
        self._script_ok = True

    async def prefix(self) -> str:
        """`<namespace>:<organisation id>:`, what every wire channel name starts with;
        the id is read from the organisation's database once."""
        if self._prefix is None:
            if self.db is None:
                raise TypeError("RedisTransport needs the organisation's database "
                                "(database=...) to name its channels")
            organisation = await MessageStore(self.db).organisation_id()
            self._prefix = wire_channel(self.settings.namespace, organisation, "")
        return self._prefix

    async def prepare(self) -> None:
        await self.prefix()

    def _unavailable(self, exc: BaseException) -> TransportUnavailable:
        reason = str(exc).strip() or type(exc).__name__
        return TransportUnavailable(
            f"Redis {redact_url(self.url)} is unavailable ({reason}); "
            "check that Redis is running and ECHO_REDIS_URL is right"
        )

    async def publish_counts(
        self, notices: Sequence[Notice], *, key: bytes | None = None
    ) -> list[int]:
        """One round trip whatever the count: a single PUBLISH, or a server-side script
        that PUBLISHes each notice in order and returns each one's receiver count (a
        pipeline of 500 PUBLISHes costs Python 4x more, in packing and parsing)."""
        if not notices:
            return []
        try:
            prefix = await self.prefix()
        except StoreUnavailable as exc:
            raise TransportUnavailable(f"cannot name the Redis channels: {exc}") from exc
        try:
            if len(notices) == 1:
                n = notices[0]
                return [int(await self.client.publish(prefix + n.channel, n.encode(key)))]
            if self._script_ok:
                args: list[str] = []
                for n in notices:
                    args += (prefix + n.channel, n.encode(key))
                try:
                    return [int(c) for c in await self._publish_script(args=args)]
                except redis.exceptions.ResponseError as exc:  # scripting refused here
                    log.info("Redis refuses the PUBLISH script (%s); pipelining instead", exc)
                    self._script_ok = False
            async with self.client.pipeline(transaction=False) as pipe:
                for n in notices:
                    pipe.publish(prefix + n.channel, n.encode(key))
                return [int(c) for c in await pipe.execute()]
        except REDIS_ERRORS as exc:
            raise self._unavailable(exc) from exc

    @contextlib.asynccontextmanager
    async def subscribe(
        self, channels: Sequence[str], *, patterns: Sequence[str] = ()
    ) -> AsyncIterator[Subscription]:
        send, receive = anyio.create_memory_object_stream[Received](_BUFFER)
        state = {"connected": False}
        sub = Subscription(receive, lambda: state["connected"])
        async with _background() as tg:
            tg.start_soon(self._pump, sub, state, list(channels), list(patterns), send)
            yield sub

    def subscribe_all(self) -> contextlib.AbstractAsyncContextManager[Subscription]:
        return self.subscribe((), patterns=["*"])

    async def _pump(
        self, sub: Subscription, state: dict[str, bool], channels: list[str],
        patterns: list[str], send: MemoryObjectSendStream[Received],
    ) -> None:
        retry = self.backoff.attempts()

        def confirmed() -> None:  # Redis answered the SUBSCRIBE: the feed is live
            state["connected"] = True
            sub.connects += 1
            sub.last_error = None
            retry.reset()
            sub._signal()

        async with send:
            while True:
                pubsub = self.client.pubsub()
                try:
                    prefix = await self.prefix()
                    if channels:
                        await pubsub.subscribe(*(prefix + c for c in channels))
                    if patterns:
                        await pubsub.psubscribe(*(prefix + p for p in patterns))
                    await self._read(pubsub, send, prefix, confirmed)
                except _SUBSCRIPTION_ERRORS as exc:
                    sub.last_error = (str(self._unavailable(exc)) if isinstance(exc, REDIS_ERRORS)
                                      else f"cannot name the Redis channels: {exc}")
                    if state["connected"]:
                        log.warning("Redis subscription lost: %s", sub.last_error)
                finally:
                    state["connected"] = False
                    with anyio.CancelScope(shield=True), contextlib.suppress(*REDIS_ERRORS):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
                await retry.wait()

    async def _read(
        self, pubsub: aioredis.client.PubSub, send: MemoryObjectSendStream[Received],
        prefix: str, confirmed: Callable[[], None],
    ) -> None:
        """Forward messages until the connection fails.

        A partition that drops packets (no RST, no FIN) never closes the socket: the
        only sign of it is silence. So whenever `keepalive` seconds pass without a
        word from Redis, a PING goes out, and no word at all (a message or the PONG)
        within `keepalive_timeout` of it ends the connection: a silent Redis is
        noticed within keepalive + keepalive_timeout seconds (2 s by default), and
        the subscriber polls Postgres from then on. The subscription counts as
        connected only once Redis has confirmed the SUBSCRIBE, so a TCP connection
        that a dead peer's kernel (or a proxy) accepted is not mistaken for a live one.
        """
        cut = len(prefix)
        pinged: float | None = None  # when the unanswered PING went out
        live = False
        while True:
            wait = self.keepalive if pinged is None else max(
                0.0, pinged + self.keepalive_timeout - time.monotonic())
            msg = await pubsub.get_message(timeout=wait)
            if msg is None:
                if pinged is None:
                    await pubsub.ping()
                    pinged = time.monotonic()
                elif time.monotonic() - pinged >= self.keepalive_timeout:
                    raise redis.exceptions.ConnectionError(
                        f"no answer to PING within {self.keepalive_timeout:g}s")
                continue
            pinged = None
            kind = msg["type"]
            if kind in ("subscribe", "psubscribe"):
                if not live:
                    live = True
                    confirmed()
            elif kind in ("message", "pmessage"):
                channel = msg["channel"]
                name = channel.decode() if isinstance(channel, bytes) else str(channel)
                await send.send(Received(name[cut:], msg["data"]))

    async def aclose(self) -> None:
        with contextlib.suppress(*REDIS_ERRORS):
            await self.client.aclose()


class NotifyTransport(Transport):
    """Postgres LISTEN/NOTIFY: real-time delivery with nothing but the database."""

    name = "notify"
    in_transaction = True
    carries_messages = True
    #: Where every signed notice goes too: NOTIFY has no pattern subscriptions, and a
    #: subscriber that follows the chain must see the notices of every channel.
    EVERY = "bus:every"

    def __init__(
        self, settings: Settings, database: Database, *, listener: Listener | None = None
    ) -> None:
        self.settings = settings
        self.db = database
        self.listener = listener

    def listen_name(self, channel: str) -> str:
        """The name to LISTEN on for `channel`: itself, or a digest when the namespaced
        name would pass Postgres's 63-byte identifier limit."""
        if len(notify_channel(self.settings, channel).encode()) <= _NOTIFY_NAME_MAX:
            return channel
        return "h:" + hashlib.sha256(channel.encode()).hexdigest()[:24]

    def _args(
        self, notices: Sequence[Notice], key: bytes | None
    ) -> tuple[list[str], list[str]]:
        """Each notice, plain, on its own channel (for any LISTENer of that channel),
        and with `key` also signed on `EVERY`. Both fit NOTIFY's 8000 bytes: a signed
        notice carries at most MAX_CARRIED_BODY_BYTES of body."""
        names = [notify_channel(self.settings, self.listen_name(n.channel)) for n in notices]
        payloads = [n.encode() for n in notices]
        if key is not None:
            names += [notify_channel(self.settings, self.EVERY)] * len(notices)
            payloads += [n.encode(key) for n in notices]
        return names, payloads

    async def publish_counts(
        self, notices: Sequence[Notice], *, key: bytes | None = None
    ) -> list[int]:
        if notices:
            async with self.db.acquire() as conn:
                await notify_in(conn, *self._args(notices, key))
        return [0] * len(notices)

    async def publish_in(
        self, conn: Connection, notices: Sequence[Notice], *, key: bytes | None = None
    ) -> int:
        if notices:
            await notify_in(conn, *self._args(notices, key))
        return 0

    def subscribe_all(self) -> contextlib.AbstractAsyncContextManager[Subscription]:
        return self.subscribe([self.EVERY])

    @contextlib.asynccontextmanager
    async def subscribe(
        self, channels: Sequence[str], *, patterns: Sequence[str] = ()
    ) -> AsyncIterator[Subscription]:
        if patterns:
            raise ValueError("NOTIFY has no pattern subscriptions; name the channels")
        listener = self.listener or Listener(self.settings)
        send, receive = anyio.create_memory_object_stream[Received](_BUFFER)
        sub = Subscription(receive, lambda: listener.connected)
        open_ = [True]

        def reconnected() -> None:
            if open_[0]:
                sub.connects += 1
                sub._signal()

        def handler(channel: str) -> Callable[[str], None]:
            def deliver(payload: str) -> None:
                if not open_[0]:
                    return
                try:
                    send.send_nowait(Received(channel, payload))
                except anyio.WouldBlock:
                    sub._signal()  # dropped: the receiver must catch up from the table

            return deliver

        registrations = [listener.on_reconnect(reconnected)]
        try:
            for channel in channels:
                registrations.append(
                    await listener.listen(self.listen_name(channel), handler(channel)))
            async with _background() as tg:
                if self.listener is None:
                    await tg.start(listener.run)
                yield sub
        finally:
            open_[0] = False
            for registration in registrations:
                registration.close()
            send.close()


def make_transport(
    settings: Settings, database: Database, *, listener: Listener | None = None
) -> Transport:
    """Redis when `settings.redis_url` is set, else NOTIFY on `database`."""
    if settings.redis_url:
        return RedisTransport(settings, database=database)
    return NotifyTransport(settings, database, listener=listener)
