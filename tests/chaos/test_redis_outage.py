"""Redis stopped in the middle of a broadcast storm, then started again.

The organisation runs on a redis-server of its own (never the shared one). While
Redis is away the publisher stores rows it cannot announce, the agents poll
Postgres, and when it returns they resubscribe and the outbox relay announces what
was left. The promise: nothing lost, nothing processed twice, and no agent was
restarted to get there (same pids, no restarts).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import anyio
import pytest

from echo import db as dbmod
from echo.bus import Message, Publisher
from echo.config import Settings
from echo.embedded import EmbeddedRedis
from echo.org.health import read_health_file
from echo.slices import BusSettings
from tests.chaos.conftest import (
    agent_pids,
    agent_restarts,
    assert_each_role_processed_each_once,
    inbox_count,
)
from tests.helpers import ROLES, all_in, run_cli, stop_org, wait_until

pytestmark = pytest.mark.chaos

BATCH = 25
OUTAGE_S = 10.0  # Redis stays down at least this long, while the storm goes on


def messages_state_is(s: Settings, wanted: str) -> Callable[[], bool]:
    """Every agent's subscriber reports `wanted` in its heartbeat file."""

    def check() -> bool:
        for role in ROLES:
            health = read_health_file(s, role, 5.0)
            if health is None or health.details.get("messages_state") != wanted:
                return False
        return True

    return check


@pytest.fixture
def redis_org(org_settings: Settings, own_redis: EmbeddedRedis) -> Iterator[Settings]:
    s = org_settings.model_copy(update={"redis_url": own_redis.url})
    yield s
    stop_org(s)


async def test_redis_down_mid_storm_loses_nothing_and_restarts_no_agent(
    redis_org: Settings, own_redis: EmbeddedRedis, bus: BusSettings, db: dbmod.Database
) -> None:
    s = redis_org
    started = await run_cli(s, "up", "--detach", timeout=120)
    assert started.returncode == 0, started.stderr
    await wait_until(all_in(s, "healthy"), timeout=60, interval=0.1)
    await wait_until(messages_state_is(s, "live"), timeout=30, interval=0.1)
    pids, restarts = agent_pids(s, ROLES), agent_restarts(s, ROLES)

    other = bus.model_copy(update={"redis_url": own_redis.url})
    sent: list[int] = []

    async def storm(label: str, batches: int, pace: float = 0.0) -> None:
        async with Publisher(other, db) as pub:
            for b in range(batches):
                sent.extend((await pub.publish_many(
                    [Message.build(from_role="operator", subject=f"{label} {b}.{i}")
                     for i in range(BATCH)])).db_ids)
                await anyio.sleep(pace)  # load spread over the outage, not a wait for state

    def processed(count: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return await inbox_count(db, sent) >= count * len(ROLES)
        return check

    await storm("before", 10)
    await anyio.to_thread.run_sync(own_redis.stop)
    await storm("during", 20, pace=OUTAGE_S / 20)  # stored, not announced
    # Redis stays down until every agent has noticed and has read the lot by polling.
    await wait_until(messages_state_is(s, "polling"), timeout=30, interval=0.1)
    await wait_until(processed(len(sent)), timeout=60, interval=0.2)
    async with db.acquire() as conn:
        unannounced = await conn.fetchval("SELECT count(*) FROM messages WHERE published_at IS NULL")
    assert unannounced > 0  # the outage was real: the publisher could not announce them

    await anyio.to_thread.run_sync(own_redis.start)
    await wait_until(messages_state_is(s, "live"), timeout=30, interval=0.1)
    await storm("after", 10)
    await wait_until(processed(len(sent)), timeout=60, interval=0.2)

    async def all_announced() -> bool:  # the outbox relay announced what was left
        async with db.acquire() as conn:
            return await conn.fetchval(
                "SELECT count(*) FROM messages WHERE published_at IS NULL") == 0

    await wait_until(all_announced, timeout=30, interval=0.2)
    assert len(sent) == 1000
    await assert_each_role_processed_each_once(s, db, ROLES, sent)
    assert agent_pids(s, ROLES) == pids
    assert agent_restarts(s, ROLES) == restarts
