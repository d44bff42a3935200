"""HealthMonitor against real Postgres, including one that goes away."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from echo import db
from echo.config import Settings
from echo.org.health import DEGRADED, DOWN, HEALTHY, HealthMonitor, read_health_file
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


async def test_the_file_is_rewritten_every_two_seconds_unless_something_changed(
    settings: Settings, db: db.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monitor = HealthMonitor(settings, db, "cto", clock=lambda: now[0])
    written: list[str] = []
    monkeypatch.setattr(monitor, "_write_file", lambda health: written.append(health.state))
    for _ in range(4):  # four beats within 1.5 s (a fast database)
        await monitor.beat()
        now[0] += 0.5
    assert written == [HEALTHY]
    now[0] += 0.5  # 2 s after the first write
    await monitor.beat()
    assert written == [HEALTHY, HEALTHY]
    now[0] += 3.0  # one beat that took 3 s (a slow database): written at the next beat
    await monitor.beat()
    assert written == [HEALTHY, HEALTHY, HEALTHY]
    monitor.problem("redis", "unreachable")
    await monitor.beat()  # what the file says changed: written at once
    await monitor.beat(DOWN)
    assert written == [HEALTHY, HEALTHY, HEALTHY, DEGRADED, DOWN]
