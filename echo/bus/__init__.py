"""The durable message bus: Postgres is the record, Redis (or NOTIFY) the courier.

A broadcast goes publisher → store → transport → subscriber, one module each:

    async with Publisher(database) as pub:
        result = await pub.publish(Message.build(from_role="cto", subject="Plan"))
        result.db_id                      # committed; announced behind the return
        confirmed = await pub.publish(message, confirm=True)
        confirmed.receivers               # how many subscribers Redis reached

    sub = Subscriber(database, "ceo", handler)   # handler(StoredMessage) -> Awaitable
    await task_group.start(sub.run)
"""

from echo.bus.envelope import (
    ALL,
    HEALTH_CHANNEL,
    ROLE_RE,
    ROLE_RULE,
    Kind,
    Message,
    Notice,
    StoredMessage,
    broadcast_channel,
    decision_channel,
    parse_notice,
    role_channel,
    wire_channel,
    workflow_channel,
)
from echo.bus.publisher import OutboxRelay, Published, Publisher
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

__all__ = [
    "ALL",
    "HEALTH_CHANNEL",
    "ROLE_RE",
    "ROLE_RULE",
    "Handler",
    "Inserted",
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
    "wire_channel",
    "workflow_channel",
]
