"""Bus benchmark: dual-write throughput and end-to-end latency, beside the raw limits.

Prints one JSON line per figure. Each ECHO figure is measured next to the bare
driver doing the least possible work in the same run, because on a shared,
noisy machine a ratio is the figure that means something:

- publish_per_s: `Publisher.publish` in a loop (INSERT with audit trigger, commit,
  PUBLISH, batched mark) vs a bare asyncpg INSERT (autocommit) loop. Target >= 70%.
- publish_many_per_s: `Publisher.publish_many` in batches of 500. Target >= 20,000/s.
- redis_publish_per_s: the bare redis PUBLISH loop (the other raw limit).
- latency p50/p99: publish at a fixed 500 msg/s to 6 `Subscriber`s, timed from
  before the INSERT to the handler, vs a bare INSERT + PUBLISH to 6 plain redis-py
  readers at the same rate. Target p99 < 10 ms.

Services: ECHO_BENCH_DATABASE_URL / ECHO_BENCH_REDIS_URL, else ECHO_TEST_*, else
embedded servers started here. Runs in its own namespace, dropped at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from echo import db as dbmod
from echo.bus import Message, MessageStore, Publisher, StoredMessage, Subscriber
from echo.config import Settings
from echo.embedded import EmbeddedPostgres, EmbeddedRedis, free_port

SECONDS = 3.0
RATE = 500
LATENCY_MESSAGES = 1500
SUBSCRIBERS = 6
ROLES = ["ceo", "cto", "chro", "product_manager", "senior_architect", "operations_head"]


def emit(figure: str, value: float, baseline: str, baseline_value: float, **extra: object) -> None:
    ratio = value / baseline_value if baseline_value else None
    line = {"bench": "bus", "figure": figure, "value": round(value, 3), "baseline": baseline,
            "baseline_value": round(baseline_value, 3),
            "ratio": round(ratio, 3) if ratio is not None else None, **extra}
    print(json.dumps(line), flush=True)


async def rate(step: Callable[[], Awaitable[int]], seconds: float = SECONDS) -> float:
    """Items per second that `step` (which returns how many it did) sustains."""
    done = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += await step()
    return done / elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def paced(count: int, send: Callable[[int], Awaitable[None]]) -> None:
    """Call `send(i)` at RATE per second, on schedule (no coordinated omission)."""
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(i)


async def bare_latency(database: dbmod.Database, redis_url: str, ns: str) -> list[float]:
    client = aioredis.Redis.from_url(redis_url)
    readers = [client.pubsub() for _ in range(SUBSCRIBERS)]
    latencies: list[float] = []
    done = anyio.Event()
    subscribed = anyio.Event()
    ready: list[int] = []

    async def read(ps: aioredis.client.PubSub) -> None:
        await ps.subscribe(f"{ns}:bare")
        async for msg in ps.listen():
            if msg["type"] == "subscribe":
                ready.append(1)
                if len(ready) == SUBSCRIBERS:
                    subscribed.set()
            elif msg["type"] == "message":
                latencies.append(time.perf_counter() - float(msg["data"]))
                if len(latencies) >= LATENCY_MESSAGES * SUBSCRIBERS:
                    done.set()

    async with database.acquire() as conn:
        async def send(_i: int) -> None:
            t0 = time.perf_counter()
            await conn.execute("INSERT INTO bare (subject, body) VALUES ($1, $2)", "x", {"t": t0})
            await client.publish(f"{ns}:bare", repr(t0))

        async with anyio.create_task_group() as tg:
            for ps in readers:
                tg.start_soon(read, ps)
            with anyio.fail_after(10):
                await subscribed.wait()
            await paced(LATENCY_MESSAGES, send)
            with anyio.fail_after(30):
                await done.wait()
            tg.cancel_scope.cancel()
    for ps in readers:
        await ps.aclose()
    await client.aclose()
    return latencies


async def echo_latency(database: dbmod.Database) -> tuple[list[float], list[Subscriber]]:
    latencies: list[float] = []
    done = anyio.Event()

    async def handler(message: StoredMessage) -> None:
        latencies.append(time.perf_counter() - message.body["t"])
        if len(latencies) >= LATENCY_MESSAGES * SUBSCRIBERS:
            done.set()

    store = MessageStore(database)
    start = await store.max_id()
    for role in ROLES[:SUBSCRIBERS]:  # only this phase's messages: skip the earlier ones
        await store.advance_cursor(role, start)
    subs = [Subscriber(database, role, handler) for role in ROLES[:SUBSCRIBERS]]
    async with anyio.create_task_group() as tg, Publisher(database) as pub:
        for sub in subs:
            await tg.start(sub.run)

        async def send(_i: int) -> None:
            await pub.publish(Message.build(from_role="ceo", subject="bench",
                                            body={"t": time.perf_counter()}))

        await paced(LATENCY_MESSAGES, send)
        with anyio.fail_after(30):
            await done.wait()
        tg.cancel_scope.cancel()
    return latencies, subs


async def main() -> None:
    dsn = os.environ.get("ECHO_BENCH_DATABASE_URL") or os.environ.get("ECHO_TEST_DATABASE_URL")
    redis_url = os.environ.get("ECHO_BENCH_REDIS_URL") or os.environ.get("ECHO_TEST_REDIS_URL")
    tmp = Path(tempfile.mkdtemp(prefix="echo-bench-"))
    pg = rd = None
    if not dsn:
        pg = EmbeddedPostgres(tmp / "pg", port=free_port())
        dsn = await anyio.to_thread.run_sync(pg.start)
    if not redis_url:
        rd = EmbeddedRedis()
        redis_url = await anyio.to_thread.run_sync(rd.start)
    ns = f"bench_{secrets.token_hex(4)}"
    s = Settings(database_url=dsn, redis_url=redis_url, namespace=ns, state_dir=tmp / "state",
                 catchup_timeout=5.0, poll_interval=1.0)
    await dbmod.migrate(s)
    database = await dbmod.Database.open(s, min_size=2, max_size=8)
    try:
        async with database.acquire() as conn:
            await conn.execute(
                "CREATE TABLE bare (id bigserial PRIMARY KEY, subject text, body jsonb)"
            )

            async def bare_insert() -> int:
                await conn.execute(
                    "INSERT INTO bare (subject, body) VALUES ($1, $2)", "x", {"a": 1}
                )
                return 1

            bare = await rate(bare_insert)

        async with Publisher(database) as pub:
            def message() -> Message:
                return Message.build(from_role="cto", subject="bench", body={"a": 1})

            async def one() -> int:
                await pub.publish(message())
                return 1

            async def many() -> int:
                await pub.publish_many([message() for _ in range(500)])
                return 500

            single = await rate(one)
            batched = await rate(many)

        client = aioredis.Redis.from_url(redis_url)

        async def bare_publish() -> int:
            await client.publish(f"{ns}:nobody", "x")
            return 1

        redis_rate = await rate(bare_publish)
        await client.aclose()

        emit("publish_per_s", single, "bare asyncpg INSERT+commit", bare, target_ratio=0.7)
        emit("publish_many_per_s", batched, "bare asyncpg INSERT+commit", bare, target=20000)
        emit("redis_publish_per_s", redis_rate, "bare asyncpg INSERT+commit", bare)

        raw = await bare_latency(database, redis_url, ns)
        ours, subs = await echo_latency(database)
        emit("latency_p50_ms", pct(ours, 0.5), "bare INSERT + PUBLISH to 6 redis-py readers",
             pct(raw, 0.5), rate=RATE, subscribers=SUBSCRIBERS)
        emit("latency_p99_ms", pct(ours, 0.99), "bare INSERT + PUBLISH to 6 redis-py readers",
             pct(raw, 0.99), rate=RATE, subscribers=SUBSCRIBERS, target_ms=10,
             mean_ms=round(statistics.fmean(ours) * 1000, 3),
             duplicates=sum(sub.stats.duplicates for sub in subs))
    finally:
        leaks = database.leaks
        await database.close()
        await dbmod.drop_namespace(s)
        if pg is not None:
            await anyio.to_thread.run_sync(pg.destroy)
        if rd is not None:
            rd.stop()
    if leaks:
        raise SystemExit(f"{leaks} connection(s) released inside a transaction")


if __name__ == "__main__":
    anyio.run(main)
