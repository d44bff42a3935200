"""Idle benchmark: what an organisation of six agents costs when nothing happens.

`echoctl up` starts six agents on the machine's Postgres (and Redis, when one is
configured) in a fresh namespace; once all are healthy and a settling pause has passed,
the run sums the agents' CPU seconds (user + system, from psutil) over a window
(ECHO_BENCH_IDLE_SECONDS, default 60). CPU time per process stays meaningful on a
loaded machine where wall-clock rates do not; the load average is printed beside it.

Baselines, measured in the same window: six bare Python processes, each running an
asyncio loop that wakes once per second (the floor for any process that keeps a
heartbeat); and six processes doing only what the guarantees ask of an idle owner
every second, with the same drivers (asyncpg, redis-py): one UPDATE of its own row
(the lease renewal; 5 s lease, `stale` after two missed renewals) and one PING on a
subscribed Redis connection (a silent Redis noticed within 2 s). What an agent costs
beyond the second baseline is ECHO's own. Beside the percentage: voluntary context
switches per agent per second (how often it wakes) and the statements it causes,
counted as table scans, inserts, updates and deletes in the namespace's own tables
(pg_stat_user_tables; the machine's Postgres need not load pg_stat_statements).

Goal (issue 20): <= 0.5 % of one core for the six agents together.

Run from the project root: `python -m bench.idle`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import anyio
import psutil

from bench._common import bench_settings, emit
from echo import db as dbmod
from echo.config import Settings
from echo.org.node.state import read_org

ROLES = ["ceo", "cto", "chro", "product_manager", "senior_architect", "operations_head"]
WINDOW = float(os.environ.get("ECHO_BENCH_IDLE_SECONDS", "60"))
SETTLE = 5.0

BARE_LOOP = (
    "import asyncio, sys\n"
    "async def main():\n"
    "    print('up', flush=True)\n"
    "    while True:\n"
    "        await asyncio.sleep(1)\n"
    "asyncio.run(main())\n"
)

MINIMUM_LOOP = (
    "import asyncio, sys, time\n"
    "import asyncpg, redis.asyncio as aioredis\n"
    "async def main():\n"
    "    conn = await asyncpg.connect(sys.argv[1])\n"
    "    await conn.execute('CREATE TEMP TABLE lease (k int PRIMARY KEY, at timestamptz)')\n"
    "    await conn.execute('INSERT INTO lease VALUES (1, now())')\n"
    "    sub = aioredis.Redis.from_url(sys.argv[2]).pubsub()\n"
    "    await sub.subscribe(sys.argv[3])\n"
    "    await sub.get_message(timeout=1)\n"
    "    print('up', flush=True)\n"
    "    while True:\n"
    "        await asyncio.sleep(1 - time.monotonic() % 1)\n"
    "        await conn.execute('UPDATE lease SET at = now() WHERE k = 1')\n"
    "        await sub.ping()\n"
    "        await sub.get_message(timeout=0.5)\n"
    "asyncio.run(main())\n"
)

TABLE_STATS = (
    "SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0)::bigint AS scans, "
    "coalesce(sum(n_tup_ins), 0)::bigint AS ins, coalesce(sum(n_tup_upd), 0)::bigint AS upd, "
    "coalesce(sum(n_tup_del), 0)::bigint AS del "
    "FROM pg_stat_user_tables WHERE schemaname = $1"
)
BY_TABLE = (
    "SELECT relname, seq_scan + coalesce(idx_scan, 0) + n_tup_ins + n_tup_upd + n_tup_del AS n "
    "FROM pg_stat_user_tables WHERE schemaname = $1"
)


def env_for(s: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHO_")}
    env.update(s.child_env())
    return env


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def wakeups(procs: list[psutil.Process]) -> int:
    return sum(p.num_ctx_switches().voluntary for p in procs)


async def table_stats(s: Settings) -> dict[str, int]:
    database = await dbmod.Database.open(s.database, max_size=1)
    try:
        async with database.acquire() as conn:
            # The statistics collector flushes each backend's counters lazily; a fresh
            # snapshot per read keeps the two reads comparable.
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            row = await conn.fetchrow(TABLE_STATS, s.namespace)
            tables = await conn.fetch(BY_TABLE, s.namespace)
    finally:
        await database.close()
    assert row is not None
    return {**dict(row), **{f"t:{t['relname']}": t["n"] for t in tables}}


async def wait_healthy(s: Settings) -> None:
    from echo.org.client import Client

    with anyio.fail_after(120):
        while True:
            async with Client(s) as client:
                status = await client.status(remote=False)
            if all(any(a.role == r and a.state == "healthy" for a in status.agents) for r in ROLES):
                return
            await anyio.sleep(0.2)


async def main() -> None:
    bare = [
        subprocess.Popen([sys.executable, "-c", BARE_LOOP], stdout=subprocess.PIPE)
        for _ in ROLES
    ]
    minimum: list[subprocess.Popen[bytes]] = []
    try:
        for b in bare:
            assert b.stdout is not None
            b.stdout.readline()
        async with bench_settings("idle", redis=True) as s:
            assert s.database_url is not None and s.redis_url is not None
            minimum = [subprocess.Popen([sys.executable, "-c", MINIMUM_LOOP, s.database_url,
                                         s.redis_url, f"{s.namespace}:minimum"],
                                        stdout=subprocess.PIPE) for _ in ROLES]
            for m in minimum:
                assert m.stdout is not None
                m.stdout.readline()
            env = env_for(s)
            subprocess.run(
                [sys.executable, "-m", "echo", "up", "--detach", "--no-console"],
                env=env, check=True, capture_output=True,
            )
            try:
                await wait_healthy(s)
                await anyio.sleep(SETTLE)
                record = read_org(s)
                assert record is not None
                agents = [psutil.Process(record.agents[r].pid) for r in ROLES]  # type: ignore[arg-type]
                node = psutil.Process(record.pid)
                bares = [psutil.Process(b.pid) for b in bare]
                least = [psutil.Process(m.pid) for m in minimum]
                stats0 = await table_stats(s)
                a0, b0, n0 = cpu_seconds(agents), cpu_seconds(bares), cpu_seconds([node])
                m0 = cpu_seconds(least)
                w0, bw0 = wakeups(agents), wakeups(bares)
                t0 = time.monotonic()
                await anyio.sleep(WINDOW)
                elapsed = time.monotonic() - t0
                a1, b1, n1 = cpu_seconds(agents), cpu_seconds(bares), cpu_seconds([node])
                m1 = cpu_seconds(least)
                w1, bw1 = wakeups(agents), wakeups(bares)
                stats1 = await table_stats(s)
                load = os.getloadavg()
            finally:
                subprocess.run([sys.executable, "-m", "echo", "down"], env=env, check=False,
                               capture_output=True)
        per_agent_s = len(ROLES) * elapsed
        delta = {k: stats1[k] - stats0.get(k, 0) for k in stats1}
        by_table = {k[2:]: round(v / per_agent_s, 2) for k, v in
                    sorted(delta.items(), key=lambda kv: -kv[1]) if k.startswith("t:") and v}
        totals = {k: delta[k] for k in ("scans", "ins", "upd", "del")}
        emit(
            "idle",
            "six_idle_agents_cpu_percent_of_one_core",
            100 * (a1 - a0) / elapsed,
            baseline="six bare asyncio loops waking once per second",
            baseline_value=100 * (b1 - b0) / elapsed,
            goal_max=0.5,
            window_s=round(elapsed, 1),
            node_supervisor_cpu_percent=round(100 * (n1 - n0) / elapsed, 3),
            loadavg_1m=round(load[0], 2),
        )
        emit(
            "idle",
            "six_idle_agents_cpu_percent_beside_the_guaranteed_minimum",
            100 * (a1 - a0) / elapsed,
            baseline="six loops doing only one UPDATE and one Redis PING a second (asyncpg, redis-py)",
            baseline_value=100 * (m1 - m0) / elapsed,
            goal_max=0.5,
            loadavg_1m=round(load[0], 2),
        )
        emit(
            "idle",
            "wakeups_per_agent_per_s",
            (w1 - w0) / per_agent_s,
            baseline="bare asyncio loop waking once per second",
            baseline_value=(bw1 - bw0) / per_agent_s,
            loadavg_1m=round(load[0], 2),
        )
        emit(
            "idle",
            "table_accesses_per_agent_per_s",
            sum(totals.values()) / per_agent_s,
            baseline="bare asyncio loop (no statements)",
            baseline_value=0.0,
            scans=delta["scans"], inserted=delta["ins"], updated=delta["upd"],
            deleted=delta["del"], per_agent_per_s_by_table=by_table,
        )
    finally:
        for b in bare + minimum:
            b.kill()
            b.wait()


if __name__ == "__main__":
    anyio.run(main)
