"""Postgres NOTIFY as the transport, for a setup without Redis.

Its notices are sent inside the inserting transaction (`in_transaction`), so they go
out exactly at commit and the row is published the moment it exists. Receiving rides
on the process's shared `Listener`. NOTIFY cannot count receivers (reports 0) and has
no pattern subscriptions, so signed notices also go to one namespace-wide channel
(`EVERY`), which is what `subscribe_all` listens on.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence

import anyio

from echo.bus.store import notify_in
from echo.bus.transport.interface import BUFFER, Received, Subscription, Transport, background
from echo.bus.wire import Notice
from echo.db import Connection, Database
from echo.listener import Listener, notify_channel

_NOTIFY_NAME_MAX = 63  # Postgres truncates identifiers (channel names) past this


class NotifyTransport(Transport):
    """Postgres LISTEN/NOTIFY: real-time delivery with nothing but the database."""

    name = "notify"
    in_transaction = True
    carries_messages = True
    #: Where every signed notice goes too: NOTIFY has no pattern subscriptions, and a
    #: subscriber that follows the chain must see the notices of every channel.
    EVERY = "bus:every"

    def __init__(self, database: Database, *, listener: Listener | None = None) -> None:
        self.settings = database.settings  # the namespace of the channels and the LISTEN
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
        send, receive = anyio.create_memory_object_stream[Received](BUFFER)
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
            async with background() as tg:
                if self.listener is None:
                    await tg.start(listener.run)
                yield sub
        finally:
            open_[0] = False
            for registration in registrations:
                registration.close()
            send.close()
