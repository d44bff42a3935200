"""`echoctl up` with real agent processes against real Postgres and Redis.

These are the promises a user relies on: the organisation comes up staggered and
healthy, a killed agent comes back and catches up exactly once, agents survive a
database that is gone at start, a crash loop stops the organisation with one clear
line, and `down` leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import psutil

from echo import db as dbmod
from echo.bus import Message, Publisher
from echo.config import Settings
from echo.org.node.state import read_org
from echo.slices import BusSettings
from tests.helpers import ROLES, all_in, cli_env, echoctl, org_processes, run_cli, wait_until


async def test_up_staggered_six_healthy_in_order_then_down_leaves_nothing(
    org_settings: Settings, db: dbmod.Database
) -> None:
    s = org_settings
    started = await run_cli(s, "up", "--staggered", "--detach", timeout=120)
    assert started.returncode == 0, started.stderr
    await wait_until(all_in(s, "healthy"), timeout=60, interval=0.1)

    record = read_org(s)
    assert record is not None and record.state == "running"
    pids_before = {r: record.agents[r].pid for r in ROLES}
    order = sorted(ROLES, key=lambda r: record.agents[r].started_at or "")
    assert order == ROLES  # staggered: each started after the previous one was ready

    shown = await run_cli(s, "status", "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert {a["role"] for a in info["agents"] if a["state"] == "healthy"} == set(ROLES)
    for a in info["agents"]:
        assert a["pid"] and a["last_heartbeat"] and a["restarts"] == 0
    assert "sekret" not in shown.stdout
    # The ready line is between the agent and its supervisor: never in a log.
    for role in ROLES:
        assert "ECHO-READY" not in (s.log_dir / f"{role}.log").read_text()
    lines = await run_cli(s, "logs", "cto", "--json")
    assert lines.returncode == 0, lines.stderr
    entries = [json.loads(line) for line in lines.stdout.splitlines()]
    assert any(e["fields"].get("role") == "cto" and "agent active" in e["message"] for e in entries)

    # The connection budget: pool of 1 + LISTEN + the lease keeper's own connection
    # (renewals must not queue behind the role's writes).
    async with db.acquire() as conn:
        held = dict(await conn.fetch(
            "SELECT application_name, count(*) FROM pg_stat_activity "
            "WHERE application_name LIKE $1 GROUP BY 1", f"echo-agent:{s.namespace}:%",
        ))
    assert set(held) == {f"echo-agent:{s.namespace}:{r}" for r in ROLES}
    assert max(held.values()) <= 3, held

    restarted = await run_cli(s, "restart", "cto")  # a person's restart: not a crash
    assert restarted.returncode == 0 and "cto restarted (pid " in restarted.stdout, restarted.stderr
    record = read_org(s)
    assert record is not None and record.agents["cto"].restarts == 0
    assert record.agents["cto"].pid not in (None, pids_before["cto"])
    await wait_until(all_in(s, "healthy"), timeout=60, interval=0.1)

    pids = [record.agents[r].pid for r in ROLES] + [record.pid]
    stopped = await run_cli(s, "down")
    assert stopped.returncode == 0, stopped.stderr
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert org_processes(s) == []
    assert await all_in(s, "down")()
    for path in (s.state_dir, s.log_dir, s.state_dir / "agents"):
        assert path.stat().st_mode & 0o777 == 0o700


async def test_sigkilled_agent_restarts_and_catches_up_exactly_once(
    org_settings: Settings, bus: BusSettings, db: dbmod.Database
) -> None:
    s = org_settings
    assert (await run_cli(s, "up", "--staggered", "--detach", timeout=120)).returncode == 0
    await wait_until(all_in(s, "healthy"), timeout=60, interval=0.1)
    record = read_org(s)
    assert record is not None
    victim = record.agents["cto"].pid
    assert victim

    os.kill(victim, signal.SIGKILL)
    async with Publisher(bus, db) as pub:
        sent = await pub.publish_many(
            [Message.build(from_role="ceo", to_role=to, subject=f"while down {i}")
             for i, to in enumerate(["all", "cto"] * 10)]
        )

    def restarted() -> bool:
        rec = read_org(s)
        return bool(rec and rec.agents["cto"].restarts == 1 and rec.agents["cto"].state == "running")

    await wait_until(restarted, timeout=30, interval=0.05)

    async def processed() -> list[int]:
        async with db.acquire() as conn:
            rows = await conn.fetch(
                "SELECT message_id FROM agent_inbox WHERE role = 'cto' ORDER BY message_id"
            )
        return [r["message_id"] for r in rows]

    async def all_processed() -> bool:
        return not set(sent.db_ids) - set(await processed())

    await wait_until(all_processed, timeout=30, interval=0.1)
    assert sorted(await processed()) == sorted(sent.db_ids)  # each once: the primary key
    async with db.acquire() as conn:
        others = await conn.fetchval(
            "SELECT count(*) FROM agent_inbox WHERE role = 'ceo' AND message_id = ANY($1)",
            sent.db_ids,
        )
    assert others == 10  # the broadcasts reached the others; the direct ones did not
    new_pid = read_org(s).agents["cto"].pid  # type: ignore[union-attr]
    assert new_pid != victim


async def test_database_down_at_start_agents_degraded_then_healthy(
    own_postgres, namespace: str, tmp_path: Path, agents_dir: Path
) -> None:
    from tests.conftest import make_settings

    s = make_settings(own_postgres.dsn, None, namespace, tmp_path / "state")
    s = s.model_copy(update={"agents_dir": agents_dir, "connect_timeout": 1.0})
    await dbmod.migrate(s.database)
    roles = ["ceo", "cto"]
    await anyio.to_thread.run_sync(own_postgres.stop, "immediate")
    try:
        started = await run_cli(s, "up", "--roles", ",".join(roles), "--detach", timeout=120)
        # It runs in the background, but it does not say "organisation up" over degraded agents.
        assert started.returncode == 1, started.stdout + started.stderr
        assert "organisation up" not in started.stdout
        assert "degraded" in started.stderr and "ceo:" in started.stderr, started.stderr
        await wait_until(all_in(s, "degraded", roles), timeout=60, interval=0.1)
        shown = await run_cli(s, "status")
        assert shown.returncode == 1, shown.stdout
        words = " ".join(shown.stdout.split())  # a table cell may wrap
        assert "cannot be reached" in words, shown.stdout
        assert "database is unavailable" in words, shown.stdout  # the reason, per agent
        await anyio.to_thread.run_sync(own_postgres.start)
        await wait_until(all_in(s, "healthy", roles), timeout=60, interval=0.1)
        record = read_org(s)
        assert record is not None and all(record.agents[r].restarts == 0 for r in roles)
    finally:
        echoctl(s, "down", "--timeout", "30")
        for proc in org_processes(s):
            proc.kill()


async def test_crash_loop_exceeds_intensity_and_stops_with_one_clear_line(
    org_settings: Settings, agents_dir: Path
) -> None:
    s = org_settings
    env = cli_env(s)
    proc = subprocess.Popen(
        # A window wide enough that a loaded machine's slow restarts still exceed it.
        [sys.executable, "-m", "echo", "up", "--staggered", "--roles", "ceo,cto", "--max-seconds", "60",
         "--no-heart"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    try:
        await wait_until(all_in(s, "healthy", ["ceo", "cto"]), timeout=60, interval=0.1)
        # From now on the CTO cannot start: every restart exits at once.
        good = (agents_dir / "cto" / "role.toml").read_text()
        (agents_dir / "cto" / "role.toml").write_text("title = [broken")
        os.kill(read_org(s).agents["cto"].pid, signal.SIGKILL)  # type: ignore[arg-type, union-attr]
        _out, err = await anyio.to_thread.run_sync(lambda: proc.communicate(timeout=60))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert "agent cto failed" in lines[0] and "role.toml" in lines[0], lines[0]
    assert org_processes(s) == []
    record = read_org(s)
    assert record is not None and record.state == "failed"
    # `status` afterwards: nothing healthy, no dead pid, the failure, and a failing exit.
    (agents_dir / "cto" / "role.toml").write_text(good)
    shown = await run_cli(s, "status", "--json")
    assert shown.returncode == 1, shown.stdout
    info = json.loads(shown.stdout)
    assert info["organisation"]["state"] == "failed"
    assert "agent cto failed" in info["problems"][0]
    agents = {a["role"]: a for a in info["agents"]}
    assert agents["cto"]["state"] == "crashed" and agents["cto"]["pid"] is None
    assert agents["cto"]["reason"]
    assert agents["ceo"]["state"] == "down" and agents["ceo"]["pid"] is None
    table = await run_cli(s, "status")
    assert table.returncode == 1 and "healthy" not in table.stdout
