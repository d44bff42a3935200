"""Fuzzing what a running Subscriber hears: random payloads on its real Redis
channel. Malformed ones are counted and dropped, the subscriber stays alive and
live, only committed messages reach the handler, and nothing is written."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from echo import db as dbmod
from echo.bus import Message, Publisher, Subscriber, parse_notice
from echo.errors import InvalidMessage
from echo.slices import BusSettings
from tests.helpers import wait_until
from tests.integration.bus.conftest import RawRedis, Recorder
from tests.unit.fuzz.strategies import wire_payloads


def malformed(payload: bytes | str) -> bool:
    try:
        parse_notice(payload)
    except InvalidMessage:
        return True
    return False


@pytest.mark.anyio  # @given hides the coroutine from the suite's automatic marker
@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(payloads=st.lists(  # Redis carries bytes: text goes as its UTF-8, surrogates and all
    wire_payloads.map(lambda p: p if isinstance(p, bytes) else p.encode("utf-8", "surrogatepass")),
    min_size=20, max_size=40))
async def test_random_payloads_are_dropped_and_the_subscriber_keeps_delivering(
    bus: BusSettings, db: dbmod.Database, raw_redis: RawRedis, payloads: list[bytes]
) -> None:
    async with db.acquire() as conn:
        rows_before = await conn.fetchval("SELECT count(*) FROM messages")
    rec = Recorder()
    sub = Subscriber(bus, db, "cto", rec)
    async with anyio.create_task_group() as tg, Publisher(bus, db) as pub:
        await tg.start(sub.run)
        await wait_until(lambda: sub.state == "live")
        for payload in payloads:
            await raw_redis.send("messages:cto", payload)
        await wait_until(lambda: sub.stats.received >= len(payloads))
        assert sub.stats.malformed == sum(map(malformed, payloads))
        good = await pub.publish(Message.build(from_role="ceo", subject="still here", to_role="cto"))
        await rec.wait_for(1)
        assert sub.state == "live"
        tg.cancel_scope.cancel()
    assert rec.ids == [good.db_id]  # nothing but the committed message reached the handler
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM messages") == rows_before + 1
