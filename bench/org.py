"""Organisation benchmark: `echoctl up --staggered` to six healthy agents, memory and
connections per agent, and restart time after SIGKILL (kill to healthy again).

Baselines, measured in the same run: a bare Python interpreter that imports the
agent's code and exits (the floor for starting any Python agent process), and its
resident memory. The kills come faster than the default restart intensity
(3 in 5 s) allows, so the run raises it; that rule is tested, not benchmarked.
Targets: all healthy in < 5 s, <= 3 connections per agent (pool of 1, LISTEN, lease keeper), restart in < 2 s.

Run from the project root: `python -m bench.org` (what `make bench` does).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time

import anyio
import psutil

from bench._common import bench_settings, emit, percentile
from echo import db as dbmod
from echo.config import Settings
from echo.org.client import Client
from echo.org.node.state import read_org

ROLES = ["ceo", "cto", "chro", "product_manager", "senior_architect", "operations_head"]
KILLS = 5


def env_for(s: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHO_")}
    env.update(s.child_env())
    return env


async def healthy(s: Settings) -> dict[str, dict]:
    async with Client(s) as client:
        status = await client.status(remote=False)
    return {a.role: a.model_dump() for a in status.agents if a.state == "healthy"}


async def wait_healthy(s: Settings, roles: list[str], pid_not: dict[str, int] | None = None) -> None:
    with anyio.fail_after(120):
        while True:
            up = await healthy(s)
            if all(r in up and (pid_not is None or up[r]["pid"] != pid_not.get(r)) for r in roles):
                return
            await anyio.sleep(0.01)


def bare_start() -> tuple[float, int]:
    """Seconds and RSS of a Python process that imports the agent's code, then waits."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import echo.org.agent.process, sys; print('up', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    elapsed = time.perf_counter() - t0
    rss = psutil.Process(proc.pid).memory_info().rss
    proc.communicate(b"")
    return elapsed, rss


async def main() -> None:
    bare = [bare_start() for _ in range(3)]
    bare_s = statistics.median(b[0] for b in bare)
    bare_rss = statistics.median(b[1] for b in bare)
    async with bench_settings("org", redis=True) as s:
        env = env_for(s)
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "echo",
                "up",
                "--staggered",
                "--stagger-delay",
                "0",
                "--detach",
                "--max-restarts",
                "100",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        await wait_healthy(s, ROLES)
        startup = time.perf_counter() - t0
        try:
            emit(
                "org",
                "up_staggered_to_6_healthy_s",
                startup,
                baseline="6 x bare interpreter start with imports, sequential",
                baseline_value=6 * bare_s,
                target_s=5,
            )
            record = read_org(s)
            assert record is not None
            rss = [psutil.Process(record.agents[r].pid).memory_info().rss for r in ROLES]
            emit(
                "org",
                "rss_per_agent_mb",
                statistics.mean(rss) / 2**20,
                baseline="bare interpreter with the same imports",
                baseline_value=bare_rss / 2**20,
                max_mb=round(max(rss) / 2**20, 1),
            )
            database = await dbmod.Database.open(s.database, max_size=1)
            try:
                async with database.acquire() as conn:
                    rows = await conn.fetch(
                        "SELECT application_name, count(*) AS n FROM pg_stat_activity "
                        "WHERE application_name LIKE $1 GROUP BY 1",
                        f"echo-agent:{s.namespace}:%",
                    )
            finally:
                await database.close()
            held = [r["n"] for r in rows]
            emit(
                "org",
                "pg_connections_per_agent_max",
                max(held),
                baseline="budget (pool of 1 + LISTEN + lease keeper)",
                baseline_value=3,
                agents=len(held),
                total=sum(held),
            )
            restarts = []
            for i in range(KILLS):
                role = ROLES[i % len(ROLES)]
                pid = read_org(s).agents[role].pid  # type: ignore[union-attr]
                t1 = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                await wait_healthy(s, [role], pid_not={role: pid})
                restarts.append(time.perf_counter() - t1)
            emit(
                "org",
                "restart_after_sigkill_median_s",
                statistics.median(restarts),
                baseline="bare interpreter start with imports",
                baseline_value=bare_s,
                p99_s=round(percentile(restarts, 0.99), 3),
                samples=len(restarts),
                target_s=2,
            )
        finally:
            subprocess.run([sys.executable, "-m", "echo", "down"], env=env, check=False, capture_output=True)


if __name__ == "__main__":
    anyio.run(main)
