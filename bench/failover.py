"""Failover benchmark: how long ECHO takes to be whole again after its Postgres primary
or its Redis master fails over, on servers this run starts itself (tests/servers.py).

Postgres: a primary and a synchronous standby; six agents (`echoctl up`, no Redis, so
delivery rides on LISTEN) on `postgresql://h:p1,h:p2/db?target_session_attrs=read-write`.
The primary is SIGKILLed; once every agent reports `degraded`, the standby is promoted.
Figure: from `pg_ctl promote` until every agent is `healthy` again (heartbeat every
1 s, so that is the resolution). Baseline, same run: from the same instant until a
bare `asyncpg.connect` with the same URL reaches the new primary (retried every 10 ms).

Sentinel: a master, a replica and three Sentinels (down-after-milliseconds beside the
figure); three subscribers and a publisher (one message every 10 ms) in this process,
on a `redis+sentinel://` URL. The master is SIGKILLed. Figure: from the kill until every
subscriber takes messages from Redis notices again (its live count grows after it
noticed the loss). Baseline, same run: from the kill until every Sentinel names the
new master (the failover itself). Messages keep arriving throughout by Postgres polls;
what is measured is the return of real-time delivery.

Run from the project root: `python -m bench.failover` (what `make bench` does).
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import asyncpg

from bench._common import bench_settings, emit
from echo import db as dbmod
from echo.bus import Message, Publisher, StoredMessage, Subscriber
from echo.config import Settings
from echo.org.status import collect_status
from tests.servers import postgres_pair, sentinel_group

ROLES = ["ceo", "cto", "chro", "product_manager", "senior_architect", "operations_head"]
ROUNDS = int(os.environ.get("ECHO_BENCH_FAILOVER_ROUNDS", "3"))
DOWN_AFTER_MS = 1000


def env_for(s: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHO_")}
    env.update(s.child_env())
    return env


async def all_in(s: Settings, state: str) -> bool:
    status = await collect_status(s, remote=False)
    states = {a["role"]: a["state"] for a in status["agents"]}
    return all(states.get(r) == state for r in ROLES)


async def wait_all(s: Settings, state: str, timeout: float = 120) -> None:
    with anyio.fail_after(timeout):
        while not await all_in(s, state):
            await anyio.sleep(0.01)


async def first_connect(dsn: str) -> float:
    """Monotonic time at which a bare connection with the URL first succeeds."""
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=1)
        except (OSError, asyncpg.PostgresError, asyncpg.exceptions.InternalClientError):
            await anyio.sleep(0.01)
            continue
        at = time.monotonic()
        await conn.close()
        return at


async def postgres_round(tmp: Path) -> tuple[float, float]:
    """(promotion → all agents healthy, promotion → bare connect) in seconds."""
    async with postgres_pair(tmp / "pair") as pair:
        s = Settings(database_url=pair.dsn, redis_url=None,
                     namespace=f"bench_failover_{secrets.token_hex(3)}", state_dir=tmp / "state")
        await dbmod.migrate(s.database)
        env = env_for(s)
        subprocess.run([sys.executable, "-m", "echo", "up", "--detach"], env=env, check=True,
                       capture_output=True)
        try:
            await wait_all(s, "healthy")
            await pair.kill_primary()
            await wait_all(s, "degraded")
            bare: list[float] = []

            async def baseline() -> None:
                bare.append(await first_connect(pair.dsn))

            async with anyio.create_task_group() as tg:
                t0 = time.monotonic()
                tg.start_soon(baseline)
                await pair.promote()
                await wait_all(s, "healthy")
                healthy_s = time.monotonic() - t0
            return healthy_s, bare[0] - t0
        finally:
            subprocess.run([sys.executable, "-m", "echo", "down"], env=env, check=False,
                           capture_output=True)


async def sentinel_round(base: Settings, tmp: Path) -> tuple[float, float]:
    """(kill → real-time delivery back on every subscriber, kill → Sentinels agree)."""
    with sentinel_group(tmp / "sentinel", down_after_ms=DOWN_AFTER_MS) as group:
        await group.wait_ready()
        s = base.model_copy(update={"redis_url": group.url})
        database = await dbmod.Database.open(s.database, max_size=4)
        subs: list[Subscriber] = []

        async def drop(_message: StoredMessage) -> None:
            return None

        try:
            async with anyio.create_task_group() as tg:
                for role in ROLES[:3]:
                    sub = Subscriber(s.bus, database, role, drop)
                    await tg.start(sub.run)
                    subs.append(sub)
                with anyio.fail_after(30):
                    while not all(sub.state == "live" for sub in subs):
                        await anyio.sleep(0.01)
                async with Publisher(s.bus, database) as pub:

                    async def stream() -> None:
                        while True:
                            await pub.publish(Message.build(from_role="operator", subject="tick"))
                            await anyio.sleep(0.01)

                    tg.start_soon(stream)
                    with anyio.fail_after(30):
                        while not all(sub.stats.live > 10 for sub in subs):
                            await anyio.sleep(0.01)
                    old = await group.master_port()
                    t0 = time.monotonic()
                    await anyio.to_thread.run_sync(group.kill, old)
                    with anyio.fail_after(60):  # each subscriber noticed the loss
                        while any(sub.state == "live" for sub in subs):
                            await anyio.sleep(0.001)
                    lost = [sub.stats.live for sub in subs]
                    agreed: list[float] = []

                    async def sentinels_agree() -> None:
                        await group.wait_failed_over(old)
                        agreed.append(time.monotonic())

                    tg.start_soon(sentinels_agree)
                    with anyio.fail_after(120):
                        while not all(sub.stats.live > n for sub, n in zip(subs, lost, strict=True)):
                            await anyio.sleep(0.001)
                    resumed_s = time.monotonic() - t0
                    with anyio.fail_after(60):
                        while not agreed:
                            await anyio.sleep(0.01)
                    tg.cancel_scope.cancel()
            return resumed_s, agreed[0] - t0
        finally:
            await database.close()


def emit_rounds(figure: str, rounds: list[tuple[float, float]], *, baseline: str,
                **extra: object) -> None:
    """One line for a figure measured in several rounds, each with its own baseline."""
    values, bases = [r[0] for r in rounds], [r[1] for r in rounds]
    emit("failover", figure, statistics.median(values), baseline=baseline,
         baseline_value=statistics.median(bases), max_s=round(max(values), 3),
         rounds=[round(v, 3) for v in values], baseline_rounds=[round(b, 3) for b in bases],
         **extra)


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="echo-bench-failover-"))
    try:
        pg = [await postgres_round(tmp / f"pg{i}") for i in range(ROUNDS)]
        emit_rounds("postgres_promotion_to_all_agents_healthy_median_s", pg,
                    baseline="bare asyncpg.connect with target_session_attrs reaching the new primary",
                    agents=len(ROLES), heartbeat_interval_s=1.0)
        async with bench_settings("failover", redis=False) as base:
            rd = [await sentinel_round(base, tmp / f"rd{i}") for i in range(ROUNDS)]
        emit_rounds("sentinel_master_kill_to_live_delivery_median_s", rd,
                    baseline="Sentinels naming the new master (the failover itself)",
                    down_after_ms=DOWN_AFTER_MS, subscribers=3)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    anyio.run(main)
