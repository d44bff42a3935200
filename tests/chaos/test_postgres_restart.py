"""Postgres restarted under a running organisation (a Postgres of the test's own).

The promise: agents go `degraded` and come back `healthy` by themselves, with no
restart; a `broadcast` during the outage fails with one clear line and writes
nothing (no row, no Redis announcement); and every message sent before and after
is processed exactly once by every agent.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from echo import db as dbmod
from echo.bus import Message, Publisher
from echo.embedded import EmbeddedPostgres
from tests.chaos.conftest import (
    agent_pids,
    agent_restarts,
    assert_broadcast_refused,
    assert_each_role_processed_each_once,
    inbox_count,
)
from tests.conftest import make_settings
from tests.helpers import ROLES, all_in, org_processes, run_cli, stop_org, wait_until
from tests.integration.bus.conftest import RawRedis, wire_prefix

pytestmark = pytest.mark.chaos


async def test_postgres_restart_degrades_recovers_and_an_outage_broadcast_writes_nothing(
    own_postgres: EmbeddedPostgres, redis_url: str, namespace: str, tmp_path: Path, agents_dir: Path
) -> None:
    s = make_settings(own_postgres.dsn, redis_url, namespace, tmp_path / "state")
    s = s.model_copy(update={"agents_dir": agents_dir, "connect_timeout": 1.0,
                             "command_timeout": 2.0})
    await dbmod.migrate(s.database)
    database = await dbmod.Database.open(s.database, max_size=2)
    raw = RawRedis(redis_url, await wire_prefix(database))
    await raw.start()
    sent: list[int] = []

    async def publish(label: str, count: int) -> None:
        async with Publisher(s.bus, database) as pub:
            sent.extend((await pub.publish_many(
                [Message.build(from_role="operator", subject=f"{label} {i}") for i in range(count)]
            )).db_ids)
        for _ in range(count):  # drain our own announcements, so only later ones remain
            await raw.next()

    async def processed() -> bool:
        return await inbox_count(database, sent) >= len(sent) * len(ROLES)

    try:
        started = await run_cli(s, "up", "--detach", timeout=120)
        assert started.returncode == 0, started.stderr
        await wait_until(all_in(s, "healthy"), timeout=60, interval=0.1)
        pids, restarts = agent_pids(s, ROLES), agent_restarts(s, ROLES)
        await publish("before", 100)
        await wait_until(processed, timeout=30, interval=0.1)

        await anyio.to_thread.run_sync(own_postgres.stop, "immediate")
        await wait_until(all_in(s, "degraded"), timeout=60, interval=0.1)
        await assert_broadcast_refused(s, "during the outage")

        await anyio.to_thread.run_sync(own_postgres.start)
        await wait_until(all_in(s, "healthy"), timeout=60, interval=0.1)
        # The first announcement after the outage is the next message we send: the
        # failed broadcast announced nothing (Redis keeps one sender's order, and the
        # failed one ran to completion before this one began).
        marker = await run_cli(s, "broadcast", "marker after the outage", "--json", timeout=60)
        assert marker.returncode == 0, marker.stderr
        _channel, first = await raw.next(timeout=10)
        assert first["subject"] == "marker after the outage"
        await publish("after", 100)
        sent.append(first["db_id"])
        await wait_until(processed, timeout=60, interval=0.1)

        async with database.acquire() as conn:
            ghosts = await conn.fetchval(
                "SELECT count(*) FROM messages WHERE subject = 'during the outage'")
        assert ghosts == 0  # not half-written
        await assert_each_role_processed_each_once(s, database, ROLES, sent)
        assert agent_pids(s, ROLES) == pids and agent_restarts(s, ROLES) == restarts
        assert database.leaks == 0
    finally:
        stop_org(s)
        await raw.close()
        await database.close()
    assert org_processes(s) == []
