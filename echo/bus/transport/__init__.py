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

One module each: `interface` (Transport, Subscription, Received), `redis`, `notify`;
`make_transport` chooses. Import from here.
"""

from __future__ import annotations

from echo.bus.transport.interface import Received, Subscription, Transport
from echo.bus.transport.notify import NotifyTransport
from echo.bus.transport.redis import RedisTransport
from echo.db import Database
from echo.listener import Listener
from echo.slices import BusSettings

__all__ = ["NotifyTransport", "Received", "RedisTransport", "Subscription", "Transport", "make_transport"]


def make_transport(
    settings: BusSettings, database: Database, *, listener: Listener | None = None
) -> Transport:
    """Redis when `settings.redis_url` is set, else NOTIFY on `database`."""
    if settings.redis_url:
        return RedisTransport(settings, database=database)
    return NotifyTransport(database, listener=listener)
