"""Soak: the organisation under steady load with things breaking, then a report.

    python -m bench.soak --minutes 2 [--rate 40] [--task-rate 10] [--kill-every 5]

Six real agent processes (`echoctl up --detach`, restart intensity raised: the kills
are the point) get a steady stream of broadcasts and noop tasks for their roles.
Meanwhile a random agent is SIGKILLed every `--kill-every` seconds, and, because the
soak owns its Redis and Postgres (embedded servers started here, never the
machine's), Redis is stopped for a few seconds every minute and Postgres is
restarted once in the middle. Sends that fail while Postgres is down are counted
as refused (the sender was told), never as sent.

Afterwards the load stops, the organisation gets up to `--drain` seconds to catch
up, and the report is printed as JSON lines: messages sent / delivered / lost /
duplicated (per role and message), tasks submitted / completed / duplicated / lost
(from the audit rows), restarts, p50/p99 delivery and task latency, agents' RSS at
start and end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import psutil

from bench._common import percentile
from echo import db as dbmod
from echo.bus import Message, Publisher
from echo.config import Settings
from echo.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from echo.errors import EchoError
from echo.org.node.state import read_org
from echo.paths import project_path
from echo.work import NewTask, TaskQueue

ROLES = ["ceo", "cto", "chro", "product_manager", "senior_architect", "operations_head"]


def report(kind: str, **figures: Any) -> None:
    print(json.dumps({"bench": "soak", "report": kind, **figures}), flush=True)


def echoctl(s: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHO_")}
    env.update(s.child_env())
    return subprocess.run([sys.executable, "-m", "echo", *args], env=env, capture_output=True,
                          text=True, timeout=180, check=False, stdin=subprocess.DEVNULL)


def agent_rss_mb(s: Settings) -> float:
    record = read_org(s)
    total = 0
    for agent in (record.agents.values() if record else []):
        with contextlib.suppress(psutil.Error, TypeError):
            total += psutil.Process(agent.pid).memory_info().rss  # type: ignore[arg-type]
    return round(total / 2**20, 1)


class Soak:
    def __init__(self, s: Settings, pg: EmbeddedPostgres, redis: EmbeddedRedis, args: argparse.Namespace):
        self.s, self.pg, self.redis, self.args = s, pg, redis, args
        self.sent: list[int] = []
        self.refused_messages = 0
        self.submitted: list[int] = []
        self.refused_tasks = 0
        self.kills = 0
        self.outages: list[str] = []
        self.rng = random.Random(args.seed)

    async def load(self, database: dbmod.Database, until: float) -> None:
        queue = TaskQueue(database)
        tick, n = 0.2, 0
        async with Publisher(self.s.bus, database) as pub:
            while time.monotonic() < until:
                started = time.monotonic()
                n += 1
                batch = [Message.build(from_role="operator", subject=f"soak {n}.{i}")
                         for i in range(max(1, round(self.args.rate * tick)))]
                tasks = [NewTask(f"soak task {n}.{i}", task_type="noop", role=self.rng.choice(ROLES))
                         for i in range(max(1, round(self.args.task_rate * tick)))]
                try:
                    self.sent += (await pub.publish_many(batch)).db_ids
                except EchoError:
                    self.refused_messages += len(batch)
                try:
                    self.submitted += [t.task_id for t in await queue.enqueue_many(tasks)]
                except EchoError:
                    self.refused_tasks += len(tasks)
                await anyio.sleep(max(0.0, tick - (time.monotonic() - started)))  # the load's pace

    async def chaos(self, until: float, total: float) -> None:
        start = time.monotonic()
        next_kill = start + self.args.kill_every
        next_redis = start + 20
        pg_restart_at = start + total / 2
        pg_done = False
        while time.monotonic() < until:
            now = time.monotonic()
            if now >= next_kill:
                next_kill = now + self.args.kill_every
                record = read_org(self.s)
                alive = [a.pid for a in (record.agents.values() if record else [])
                         if a.pid and a.state == "running"]
                if alive:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.rng.choice(alive), signal.SIGKILL)
                        self.kills += 1
            if now >= next_redis and now + 10 < until:
                next_redis = now + 60
                await anyio.to_thread.run_sync(self.redis.stop)
                await anyio.sleep(5)  # the outage's length
                await anyio.to_thread.run_sync(self.redis.start)
                self.outages.append("redis 5s")
            if not pg_done and now >= pg_restart_at:
                pg_done = True
                t0 = time.monotonic()
                await anyio.to_thread.run_sync(self.pg.stop, "immediate")
                await anyio.sleep(3)
                await anyio.to_thread.run_sync(self.pg.start)
                self.outages.append(f"postgres {time.monotonic() - t0:.1f}s")
            await anyio.sleep(0.1)

    async def drained(self, database: dbmod.Database) -> bool:
        async with database.acquire() as conn:
            delivered = await conn.fetchval(
                "SELECT count(*) FROM agent_inbox WHERE message_id = ANY($1)", self.sent)
            done = await conn.fetchval(
                "SELECT count(*) FROM agent_tasks WHERE task_id = ANY($1) AND status = 'completed'",
                self.submitted)
        return bool(delivered == len(self.sent) * len(ROLES) and done == len(self.submitted))

    async def figures(self, database: dbmod.Database) -> None:
        async with database.acquire() as conn:
            pairs = await conn.fetchval(
                "SELECT count(*) FROM agent_inbox WHERE message_id = ANY($1)", self.sent)
            fully = await conn.fetchval(
                "SELECT count(*) FROM (SELECT message_id FROM agent_inbox WHERE message_id = ANY($1) "
                "GROUP BY 1 HAVING count(*) = $2) x", self.sent, len(ROLES))
            lat = [r[0] for r in await conn.fetch(
                "SELECT extract(epoch FROM i.processed_at - m.created_at) FROM agent_inbox i "
                "JOIN messages m ON m.id = i.message_id WHERE m.id = ANY($1)", self.sent)]
            tasks = await conn.fetch(
                "SELECT subject_id, count(*) FILTER (WHERE action = 'task.completed') AS done, "
                "count(*) FILTER (WHERE action = 'task.claimed') AS claims FROM agent_actions "
                "WHERE subject_type = 'task' GROUP BY 1")
            task_lat = [r[0] for r in await conn.fetch(
                "SELECT extract(epoch FROM completed_at - created_at) FROM agent_tasks "
                "WHERE status = 'completed' AND task_id = ANY($1)", self.submitted)]
        record = read_org(self.s)
        restarts = sum(a.restarts for a in record.agents.values()) if record else None
        report("messages", sent=len(self.sent), refused_during_outage=self.refused_messages,
               delivered_pairs=pairs, expected_pairs=len(self.sent) * len(ROLES),
               delivered_to_every_role=fully, lost=len(self.sent) - fully,
               duplicated=0,  # (role, message) is agent_inbox's primary key; see delivered_pairs
               p50_delivery_s=round(float(percentile(lat, 0.5)), 3) if lat else None,
               p99_delivery_s=round(float(percentile(lat, 0.99)), 3) if lat else None)
        completions = {int(r["subject_id"]): r["done"] for r in tasks}
        report("tasks", submitted=len(self.submitted), refused_during_outage=self.refused_tasks,
               completed=sum(1 for t in self.submitted if completions.get(t, 0) >= 1),
               duplicated=sum(1 for t in self.submitted if completions.get(t, 0) > 1),
               lost=sum(1 for t in self.submitted if completions.get(t, 0) == 0),
               reclaimed=sum(1 for r in tasks if r["claims"] > 1),
               p50_latency_s=round(float(percentile(task_lat, 0.5)), 3) if task_lat else None,
               p99_latency_s=round(float(percentile(task_lat, 0.99)), 3) if task_lat else None)
        report("chaos", agent_kills=self.kills, agent_restarts=restarts, outages=self.outages,
               organisation=record.state if record else None)


async def main(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="echo-soak-"))
    pg = EmbeddedPostgres(tmp / "pg", port=free_port())
    redis = EmbeddedRedis()
    agents = tmp / "agents"
    shutil.copytree(project_path("agents"), agents)
    s: Settings | None = None
    try:
        dsn = await anyio.to_thread.run_sync(pg.start)
        await anyio.to_thread.run_sync(redis.start)
        s = Settings(database_url=dsn, redis_url=redis.url, namespace="soak", state_dir=tmp / "state",
                     agents_dir=agents, connect_timeout=1.0, command_timeout=3.0, log_level="WARNING")
        await dbmod.migrate(s.database)
        up = await anyio.to_thread.run_sync(lambda: echoctl(s, "up", "--detach", "--max-restarts", "100000"))
        if up.returncode != 0:
            print(up.stderr, file=sys.stderr)
            return 1
        database = await dbmod.Database.open(s.database, min_size=0, max_size=2)  # no floor to restore
        soak = Soak(s, pg, redis, args)
        rss_start = agent_rss_mb(s)
        total = args.minutes * 60
        until = time.monotonic() + total
        async with anyio.create_task_group() as tg:
            tg.start_soon(soak.load, database, until)
            tg.start_soon(soak.chaos, until, total)
        drain_start = time.monotonic()
        with anyio.move_on_after(args.drain):
            while True:
                with contextlib.suppress(EchoError):
                    if await soak.drained(database):
                        break
                await anyio.sleep(0.5)
        drain_s = round(time.monotonic() - drain_start, 1)
        await soak.figures(database)
        report("memory", agents_rss_mb_start=rss_start, agents_rss_mb_end=agent_rss_mb(s),
               drain_s=drain_s, minutes=args.minutes)
        await database.close()
        return 0
    finally:
        if s is not None:
            settings = s
            with contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(lambda: echoctl(settings, "down", "--timeout", "30"))
        for proc in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error):
                if proc.environ().get("ECHO_STATE_DIR") == str(tmp / "state"):
                    proc.kill()
        redis.stop()
        await anyio.to_thread.run_sync(pg.destroy)
        shutil.rmtree(tmp, ignore_errors=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=40.0, help="broadcasts per second")
    parser.add_argument("--task-rate", type=float, default=10.0, help="tasks per second")
    parser.add_argument("--kill-every", type=float, default=5.0, help="seconds between agent kills")
    parser.add_argument("--drain", type=float, default=90.0, help="seconds allowed to catch up")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(anyio.run(main, parse()))
