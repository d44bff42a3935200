"""HealthMonitor against real Postgres, including one that goes away."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from echo import db
from echo.config import Settings
from echo.org.agent.lease_keeper import LeaseKeeper
from echo.org.health import (
    DEGRADED,
    DOWN,
    HEALTHY,
    UNRESPONSIVE,
    AgentHealth,
    HealthMonitor,
    health_file,
    read_health_file,
    write_health_file,
)
from tests.conftest import make_settings


async def test_beat_writes_row_audit_and_file(settings: Settings, db: db.Database) -> None:
    monitor = HealthMonitor(settings, db, "cto", stats=lambda: {"inbox": 3})
    await monitor.beat()
    async with db.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM agent_health WHERE role = 'cto'")
        audit = await conn.fetchval(
            "SELECT count(*) FROM agent_actions WHERE subject_type='agent' AND action='agent.healthy'"
        )
    assert row["state"] == HEALTHY and row["details"] == {"inbox": 3}
    assert audit == 1
    local = read_health_file(settings, "cto", stale_after=5)
    assert local is not None and local.state == HEALTHY
    assert (settings.state_dir / "agents").stat().st_mode & 0o777 == 0o700
    snapshot = await monitor.snapshot()
    assert snapshot["cto"].state == HEALTHY


async def test_clean_stop_reports_down(settings: Settings, db: db.Database) -> None:
    monitor = HealthMonitor(settings, db, "ceo", interval=0.05)
    async with anyio.create_task_group() as tg:
        await tg.start(monitor.run)
        tg.cancel_scope.cancel()
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT state FROM agent_health WHERE role='ceo'") == DOWN


async def test_database_outage_degrades_never_raises_and_recovers(
    own_postgres, namespace: str, tmp_path: Path
) -> None:
    s = make_settings(own_postgres.dsn, None, namespace, tmp_path / "state")
    s = s.model_copy(update={"command_timeout": 2.0, "connect_timeout": 1.0})
    await db.migrate(s.database)
    database = await db.Database.open(s.database, max_size=1)
    try:
        monitor = HealthMonitor(s, database, "cto", interval=0.05)
        await monitor.beat()
        assert monitor.state == HEALTHY
        await anyio.to_thread.run_sync(own_postgres.stop, "immediate")
        for _ in range(3):
            await monitor.beat()
        assert monitor.state == DEGRADED and "database" in (monitor.reason or "")
        assert monitor.breaker.state == "open"
        local = read_health_file(s, "cto", stale_after=5)
        assert local is not None and local.state == DEGRADED  # served without the database
        assert (await monitor.snapshot())["cto"].state == DEGRADED
        await anyio.to_thread.run_sync(own_postgres.start)
        monitor.breaker.reset_timeout = 0  # let the next beat try at once
        with anyio.fail_after(15):
            while monitor.state != HEALTHY:
                await monitor.beat()
        assert monitor.breaker.state == "closed"
    finally:
        await database.close()


async def test_the_file_is_rewritten_when_it_changes_and_touched_every_two_seconds(
    settings: Settings, db: db.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monitor = HealthMonitor(settings, db, "cto", clock=lambda: now[0])
    written: list[str] = []
    touched: list[float] = []
    monkeypatch.setattr(monitor, "_write_file", lambda health: written.append(health.state))

    def touch() -> bool:
        touched.append(now[0])
        return True

    monkeypatch.setattr(monitor, "_touch_file", touch)
    for _ in range(4):  # four beats within 1.5 s (a fast database)
        await monitor.beat()
        now[0] += 0.5
    assert written == [HEALTHY] and touched == []
    now[0] += 0.5  # 2.5 s after the first write: the same words, a new time
    await monitor.beat()
    assert written == [HEALTHY] and touched == [102.5]
    now[0] += 3.0  # one beat that took 3 s (a slow database): touched at the next beat
    await monitor.beat()
    assert touched == [102.5, 105.5]
    monitor.problem("redis", "unreachable")
    await monitor.beat()  # what the file says changed: written at once
    await monitor.beat(DOWN)
    assert written == [HEALTHY, DEGRADED, DOWN] and touched == [102.5, 105.5]


async def test_a_touched_file_reads_as_a_fresh_heartbeat(settings: Settings, db: db.Database) -> None:
    now = [100.0]
    monitor = HealthMonitor(settings, db, "cto", clock=lambda: now[0])
    await monitor.beat()
    path = health_file(settings, "cto")
    long_ago = time.time() - 60
    said = json.loads(path.read_text())  # as if the agent had been silent for a minute
    said["last_heartbeat"] = datetime.fromtimestamp(long_ago, UTC).isoformat()
    path.write_text(json.dumps(said))
    os.utime(path, (long_ago, long_ago))
    written = path.read_text()
    stale = read_health_file(settings, "cto", stale_after=5)
    assert stale is not None and stale.state == UNRESPONSIVE
    now[0] += 2.0
    await monitor.beat()  # nothing changed: the file is touched, not rewritten
    assert path.read_text() == written
    fresh = read_health_file(settings, "cto", stale_after=5)
    assert fresh is not None and fresh.state == HEALTHY
    assert fresh.last_heartbeat is not None
    age = time.time() - datetime.fromisoformat(fresh.last_heartbeat).timestamp()
    assert 0 <= age < 5


async def _heartbeat(database: db.Database, role: str) -> tuple[float, int]:
    async with database.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT extract(epoch FROM last_heartbeat)::float8 AS at, pid FROM agent_health "
            "WHERE role = $1", role)
    assert row is not None
    return row["at"], row["pid"]


async def test_the_lease_renewal_carries_an_unchanged_agents_heartbeat(
    settings: Settings, db: db.Database
) -> None:
    """One statement a second for an idle owner: the renewal refreshes the row's heartbeat,
    the monitor writes only what changed, and writes itself whenever the renewal did not
    carry its row (another process's row, or no renewal lately)."""
    now = [100.0]
    keeper = LeaseKeeper(settings.leases, settings.database, "cto", clock=lambda: now[0])
    await keeper.open()
    try:
        assert await keeper.try_acquire() is not None
        monitor = HealthMonitor(settings, db, "cto", clock=lambda: now[0],
                                carrier=lambda: keeper.heartbeat_at)
        await monitor.beat()
        assert monitor.writes == 1
        first, pid = await _heartbeat(db, "cto")
        assert pid == os.getpid()

        now[0] += 1.0
        assert (await keeper.renew())[0]
        carried, _ = await _heartbeat(db, "cto")
        assert carried > first  # the renewal refreshed the heartbeat
        await monitor.beat()
        assert monitor.writes == 1  # nothing changed and the renewal carried it

        monitor.problem("redis", "unreachable")
        await monitor.beat()  # a change is written at once
        assert monitor.writes == 2
        async with db.acquire() as conn:
            assert await conn.fetchval(
                "SELECT state FROM agent_health WHERE role = 'cto'") == DEGRADED
        monitor.resolved("redis")
        await monitor.beat()
        assert monitor.writes == 3

        now[0] += 1.0
        async with db.acquire() as conn:  # another process of the role wrote the row
            await conn.execute("UPDATE agent_health SET pid = pid + 1 WHERE role = 'cto'")
        assert (await keeper.renew())[0]
        await monitor.beat()  # the renewal did not carry this agent's row: written
        assert monitor.writes == 4
        assert (await _heartbeat(db, "cto"))[1] == os.getpid()

        now[0] += 1.0
        assert (await keeper.renew())[0]
        await monitor.beat()
        assert monitor.writes == 4
        now[0] += 2.5  # no renewal for 2.5 s (the database is slow): the monitor writes
        await monitor.beat()
        assert monitor.writes == 5

        await monitor.beat(DOWN)
        down_at, _ = await _heartbeat(db, "cto")
        now[0] += 1.0
        assert (await keeper.renew())[0]  # renewals go on while the tree stops
        assert (await _heartbeat(db, "cto"))[0] == down_at  # a `down` row is left as it was
    finally:
        await keeper.close()


async def test_a_file_another_process_replaced_is_written_again_not_touched(
    settings: Settings, db: db.Database
) -> None:
    """A standby of the role writes the same file (echo/org/agent/standby.py); the owner
    must not keep that content looking fresh by touching it."""
    now = [100.0]
    monitor = HealthMonitor(settings, db, "cto", clock=lambda: now[0])
    await monitor.beat()
    other = AgentHealth(role="cto", state=DEGRADED, pid=os.getpid() + 1, host="elsewhere",
                        reason="standby: another agent holds the role")
    write_health_file(settings, other)
    now[0] += 2.0
    await monitor.beat()  # nothing the owner says changed, but the file is not its own
    mine = read_health_file(settings, "cto", stale_after=5)
    assert mine is not None and mine.pid == os.getpid() and mine.state == HEALTHY


class _CancelledAfterWrite(db.Database):
    """The test's pool, whose statement lands and whose caller is then cancelled (a
    supervisor stopping the monitor at that moment), once `scope` is set."""

    def __init__(self, real: db.Database) -> None:
        super().__init__(real.settings, real.pool)
        self.scope: anyio.CancelScope | None = None

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        async with super().acquire() as conn:
            yield self if self.scope is not None else conn

    async def execute(self, *args: Any) -> Any:
        async with super().acquire() as conn:
            done = await conn.execute(*args)
        assert self.scope is not None
        self.scope.cancel()
        self.scope = None
        await anyio.lowlevel.checkpoint()
        return done


async def test_a_beat_cancelled_after_its_write_is_not_counted_as_stored(
    settings: Settings, db: db.Database
) -> None:
    """A beat cancelled once its write had landed: the monitor cannot know what the row
    says, so its next beat writes it, even while a renewal carries the heartbeat."""
    now = [100.0]
    database = _CancelledAfterWrite(db)
    monitor = HealthMonitor(settings, database, "cto", clock=lambda: now[0],
                            carrier=lambda: now[0])
    await monitor.beat()  # healthy, stored
    monitor.problem("redis", "unreachable")
    with anyio.CancelScope() as scope:
        database.scope = scope
        await monitor.beat()  # `degraded` lands, then the monitor is cancelled
    assert scope.cancel_called
    monitor.resolved("redis")
    await monitor.beat()  # healthy again, as first stored: but the row says degraded
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT state FROM agent_health WHERE role = 'cto'") == HEALTHY
