"""Redis pub/sub as the transport: notices PUBLISHed, subscriptions kept alive.

PUBLISH goes to `<namespace>:<organisation id>:<channel>` (`echo.bus.channels`);
subscriptions reconnect with capped backoff when Redis drops, and PING a quiet
connection so that a silent partition is noticed in about 2 s. `publish` returns how
many subscribers Redis reached.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

import anyio
import redis.asyncio as aioredis
import redis.exceptions
from anyio.streams.memory import MemoryObjectSendStream
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from echo.bus.channels import wire_channel
from echo.bus.redis_client import redis_client
from echo.bus.store import MessageStore
from echo.bus.transport.interface import BUFFER, Received, Subscription, Transport, background
from echo.bus.wire import Notice
from echo.db import Database
from echo.errors import StoreUnavailable, TransportUnavailable
from echo.runtime import Backoff
from echo.runtime.ticks import until_tick
from echo.slices import BusSettings
from echo.urls import redact_url

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
#: PUBLISH each (channel, payload) pair of ARGV in order; the receiver count of each.
_PUBLISH_SCRIPT = """
local counts = {}
for i = 1, #ARGV, 2 do
    counts[#counts + 1] = redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return counts
"""


class RedisTransport(Transport):
    """Redis pub/sub. The URL may be `rediss://` (TLS), may carry a password, and may
    name Sentinels (`redis+sentinel://`), whose current master is used."""

    name = "redis"
    carries_messages = True
    component = "redis"

    def __init__(
        self, settings: BusSettings, *, database: Database | None = None,
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
        send, receive = anyio.create_memory_object_stream[Received](BUFFER)
        state = {"connected": False}
        sub = Subscription(receive, lambda: state["connected"])
        async with background() as tg:
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
                        await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
                await retry.wait()

    async def _read(
        self, pubsub: aioredis.client.PubSub, send: MemoryObjectSendStream[Received],
        prefix: str, confirmed: Callable[[], None],
    ) -> None:
        """Forward messages until the connection fails.

        A partition that drops packets (no RST, no FIN) never closes the socket: the
        only sign of it is silence. So when a tick of `keepalive` seconds (the
        process's shared tick, echo.runtime.ticks) comes with no word from Redis since
        the last, a PING goes out, and no word at all (a message or the PONG) within
        `keepalive_timeout` of it ends the connection: a silent Redis is
        noticed within keepalive + keepalive_timeout seconds (2 s by default), and
        the subscriber polls Postgres from then on. The subscription counts as
        connected only once Redis has confirmed the SUBSCRIBE, so a TCP connection
        that a dead peer's kernel (or a proxy) accepted is not mistaken for a live one.
        """
        cut = len(prefix)
        pinged: float | None = None  # when the unanswered PING went out
        live = False
        while True:
            wait = until_tick(self.keepalive) if pinged is None else max(
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
