"""Transports on their own: Redis patterns and reconnection, NOTIFY channel names."""

from __future__ import annotations

import anyio

from echo import db as dbmod
from echo.bus import Message, Notice, NotifyTransport, Received, RedisTransport, Subscription, parse_notice
from echo.config import Settings
from echo.embedded import EmbeddedRedis
from tests.integration.bus.conftest import wait_until


def notice(db_id: int, channel: str = "messages:all") -> Notice:
    to = channel.removeprefix("messages:") if channel.startswith("messages:") else "all"
    m = Message.build(from_role="cto", subject="x", channel=channel, to_role=to)
    return Notice.of(m, db_id)


async def next_received(sub: Subscription) -> Received:
    with anyio.fail_after(5):
        async for received in sub:
            return received
    raise AssertionError("subscription ended")


async def test_redis_pattern_subscription_and_reconnect(
    settings: Settings, own_redis: EmbeddedRedis, db: dbmod.Database
) -> None:
    s = settings.bus.model_copy(update={"redis_url": own_redis.url})
    transport = RedisTransport(s, database=db, backoff_initial=0.02, backoff_max=0.1)
    connected = anyio.Event()
    try:
        async with transport.subscribe(["messages:all"], patterns=["decisions:*"]) as sub:
            sub.on_connect(connected.set)
            with anyio.fail_after(5):
                await connected.wait()
            assert await transport.publish([notice(1), notice(2, "decisions:9")]) == 2
            got = [await next_received(sub), await next_received(sub)]
            assert [(r.channel, parse_notice(r.data).db_id) for r in got] == [
                ("messages:all", 1), ("decisions:9", 2)]

            await anyio.to_thread.run_sync(own_redis.stop)
            await wait_until(lambda: not sub.connected)
            connected = anyio.Event()
            sub.on_connect(connected.set)
            await anyio.to_thread.run_sync(own_redis.start)
            with anyio.fail_after(10):
                await connected.wait()
            assert sub.connects == 2
            assert await transport.publish([notice(3)]) == 1
            assert parse_notice((await next_received(sub)).data).db_id == 3
    finally:
        await transport.aclose()


async def test_notify_transport_round_trip_and_long_names(db: dbmod.Database) -> None:
    transport = NotifyTransport(db)
    long_role = "r" * 60
    assert transport.listen_name("messages:all") == "messages:all"
    assert transport.listen_name(f"messages:{long_role}").startswith("h:")
    connected = anyio.Event()
    async with transport.subscribe(["messages:all", f"messages:{long_role}"]) as sub:
        sub.on_connect(connected.set)
        with anyio.fail_after(5):
            await connected.wait()
        await transport.publish([notice(5)])
        async with db.transaction() as conn:
            await transport.publish_in(conn, [notice(6, f"messages:{long_role}")])
        first, second = await next_received(sub), await next_received(sub)
    assert (first.channel, parse_notice(first.data).db_id) == ("messages:all", 5)
    assert (second.channel, parse_notice(second.data).db_id) == (f"messages:{long_role}", 6)
