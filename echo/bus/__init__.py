"""The durable message bus: Postgres is the record, Redis (or NOTIFY) the courier.

A broadcast goes along its data path, one module each: envelope (the message) →
publisher (dual write; group commit in batcher) → store (Postgres) → wire (the signed
notice) → transport (Redis or NOTIFY) → subscriber (catch-up, then live delivery, with
the chain buffer); relay announces what a publisher left unannounced, and channels
names where everything goes. Import from here: the modules behind it may move.

    async with anyio.create_task_group() as tg:
        pub = Publisher(settings.bus, database)  # the bus's slice of the settings (echo.slices)
        await tg.start(pub.run)                  # or: async with Publisher(...) as pub
        result = await pub.publish(Message.build(from_role="cto", subject="Plan"))
        result.db_id                             # committed; announced behind the return
        confirmed = await pub.publish(message, confirm=True)
        confirmed.receivers                      # how many subscribers Redis reached

    sub = Subscriber(settings.bus, database, "ceo", handler)  # handler(StoredMessage) -> Awaitable
    await task_group.start(sub.run)
"""

from echo.bus.batcher import GroupCommit, Job
from echo.bus.chain import ChainBuffer
from echo.bus.channels import (
    ALL,
    HEALTH_CHANNEL,
    ROLE_RE,
    broadcast_channel,
    decision_channel,
    role_channel,
    valid_channel,
    wire_channel,
    workflow_channel,
)
from echo.bus.envelope import ROLE_RULE, Kind, Message, StoredMessage
from echo.bus.publisher import Published, Publisher
from echo.bus.relay import OutboxRelay
from echo.bus.store import Inserted, MessageStore
from echo.bus.subscriber import Handler, Subscriber, SubscriberStats
from echo.bus.transport import (
    NotifyTransport,
    Received,
    RedisTransport,
    Subscription,
    Transport,
    make_transport,
)
from echo.bus.wire import MAX_CARRIED_BODY_BYTES, MAX_NOTICE_BYTES, Notice, parse_notice

__all__ = [
    "ALL",
    "HEALTH_CHANNEL",
    "MAX_CARRIED_BODY_BYTES",
    "MAX_NOTICE_BYTES",
    "ROLE_RE",
    "ROLE_RULE",
    "ChainBuffer",
    "GroupCommit",
    "Handler",
    "Inserted",
    "Job",
    "Kind",
    "Message",
    "MessageStore",
    "Notice",
    "NotifyTransport",
    "OutboxRelay",
    "Published",
    "Publisher",
    "Received",
    "RedisTransport",
    "StoredMessage",
    "Subscriber",
    "SubscriberStats",
    "Subscription",
    "Transport",
    "broadcast_channel",
    "decision_channel",
    "make_transport",
    "parse_notice",
    "role_channel",
    "valid_channel",
    "wire_channel",
    "workflow_channel",
]
