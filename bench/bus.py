"""Bus benchmark: dual-write throughput and end-to-end latency, beside the raw limits.

Prints one JSON line per figure (value, baseline, baseline_value, ratio, target).
Each ECHO figure is measured next to the bare driver doing the least possible work
in the same run, with the same concurrency, because on a shared, noisy machine a
ratio is the figure that means something:

- publish_per_s: ONE caller doing `Publisher.publish` in a loop (INSERT with the
  ordering lock and audit trigger, commit; the signed PUBLISH follows behind and the
  mark is batched) vs ONE connection doing a bare INSERT (autocommit) in a loop. The
  clock stops only when every message is announced too (`Publisher.drain`), so the
  figure counts complete dual writes. The medians of ROUNDS alternating rounds, each
  round's ratio beside them. Target >= 70% (issue 20: >= 50%).
- publish_confirmed_per_s: the same, each call waiting for its own PUBLISH
  (`confirm=True`, as `echoctl broadcast` does to report receivers).
- publish_concurrent_per_s: CONCURRENCY callers publishing single messages through
  one process's `Publisher` vs CONCURRENCY connections each doing bare INSERTs.
  Target >= 70%.
- publish_many_per_s: `Publisher.publish_many` in batches of 500, drained likewise.
  Target >= 20,000/s.
- redis_publish_per_s: the bare redis PUBLISH loop (the other raw limit).
- latency_p99_ms_notify: the same without Redis (Postgres NOTIFY, the embedded default).
- latency p50/p99: publish at a fixed 500 msg/s to 6 `Subscriber`s, each in its OWN
  OS process as agents are deployed, timed from before the INSERT to each handler
  (CLOCK_MONOTONIC is system-wide), vs a bare INSERT + PUBLISH to 6 plain redis-py
  readers, also one process each, at the same rate. Target p99 < 10 ms.

Services: ECHO_BENCH_DATABASE_URL / ECHO_BENCH_REDIS_URL, else ECHO_TEST_*, else
embedded servers started here. Runs in its own namespace, dropped at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python bench/bus.py`, Python puts bench/ first on the path (as an absolute
# path), where a sibling bench (bench/queue.py) would shadow the standard library's
# `queue` that redis-py imports. Put the project root there instead, before anything
# else is imported.
if str(Path(__file__).resolve().parent) in sys.path:
    sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncio
import json
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable

import anyio
import redis.asyncio as aioredis
from anyio.abc import Process

from echo import db as dbmod
from echo.bus import Message, MessageStore, Publisher, StoredMessage, Subscriber
from echo.config import Settings
from echo.embedded import EmbeddedPostgres, EmbeddedRedis, free_port

SECONDS = 3.0
ROUNDS = 3  # alternating rounds of the single-publisher figure
CONCURRENCY = 8
BATCH = 500
RATE = 500
LATENCY_MESSAGES = 1500
SUBSCRIBERS = 6
ROLES = ["ceo", "cto", "chro", "product_manager", "senior_architect", "operations_head"]
DEPLOYMENT = f"{SUBSCRIBERS} subscriber OS processes (one per agent), publisher in the parent"
BARE_INSERT = "INSERT INTO bare (subject, body) VALUES ($1, $2)"


def emit(figure: str, value: float, baseline: str, baseline_value: float, **extra: object) -> None:
    ratio = value / baseline_value if baseline_value else None
    line = {"bench": "bus", "figure": figure, "value": round(value, 3), "baseline": baseline,
            "baseline_value": round(baseline_value, 3),
            "ratio": round(ratio, 3) if ratio is not None else None, **extra}
    print(json.dumps(line), flush=True)


async def rate(step: Callable[[], Awaitable[int]], seconds: float = SECONDS,
               workers: int = 1, settle: Callable[[], Awaitable[None]] | None = None) -> float:
    """Items per second that `workers` concurrent loops of `step` (which returns how
    many it did) sustain together, counting the time `settle` takes to finish what
    they started."""
    done = 0
    start = time.perf_counter()

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() - start < seconds:
            did = await step()  # not `done += await step()`: that reads `done` before the
            done += did         # await and loses the other workers' increments

    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(loop)
    if settle is not None:
        await settle()
    return done / (time.perf_counter() - start)


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


# ---------------------------------------------------------------- subscriber processes


async def child(mode: str, role: str) -> None:
    """One receiver process: print `ready` once subscribed, then the latencies of
    LATENCY_MESSAGES messages as one JSON list."""
    latencies: list[float] = []
    done = anyio.Event()
    s = Settings()  # from the ECHO_* environment the parent passed
    cpu_at_ready = 0.0
    counts: dict[str, int] = {}

    def ready() -> None:
        nonlocal cpu_at_ready
        cpu_at_ready = time.process_time()
        print("ready", flush=True)

    def got(sent: float) -> None:
        latencies.append(time.monotonic() - sent)
        if len(latencies) >= LATENCY_MESSAGES:
            done.set()

    if mode == "bare":
        assert s.redis_url
        client = aioredis.Redis.from_url(s.redis_url)
        ps = client.pubsub(ignore_subscribe_messages=True)
        await ps.subscribe(f"{s.namespace}:bare")
        ready()
        async for msg in ps.listen():
            got(float(msg["data"]))
            if done.is_set():
                break
        await ps.aclose()
        await client.aclose()
    else:
        database = await dbmod.Database.open(s.database, min_size=1, max_size=2)

        async def handler(message: StoredMessage) -> None:
            got(message.body["t"])

        sub = Subscriber(s.bus, database, role, handler)
        async with anyio.create_task_group() as tg:
            await tg.start(sub.run)
            while sub.state != "live":
                await anyio.sleep(0.01)
            ready()
            with anyio.fail_after(60):
                await done.wait()
            counts = {"live": sub.stats.live, "reads": sub.stats.reads, "gaps": sub.stats.gaps}
            tg.cancel_scope.cancel()
        await database.close()
    print(json.dumps({"latencies": latencies, "cpu_s": time.process_time() - cpu_at_ready,
                      **counts}), flush=True)


async def receivers(s: Settings, mode: str) -> list[Process]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHO_")}
    env.update(s.child_env())
    procs = [await anyio.open_process([sys.executable, __file__, "--child", mode, role],
                                      env=env, stderr=None)  # a child's errors show here
             for role in ROLES[:SUBSCRIBERS]]
    try:
        for proc in procs:
            with anyio.fail_after(30):
                line = await _readline(proc)
            if line != "ready":
                raise SystemExit(f"a {mode} receiver failed to start: {line!r}")
    except BaseException:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
        raise
    return procs


async def _readline(proc: Process) -> str:
    assert proc.stdout is not None
    buf = b""
    while not buf.endswith(b"\n"):
        try:
            buf += await proc.stdout.receive(1)
        except anyio.EndOfStream:
            raise SystemExit(f"a receiver process ended early (exit {await proc.wait()})") from None
    return buf.decode().strip()


async def collect(procs: list[Process]) -> tuple[list[float], float, dict[str, int]]:
    """All receivers' latencies, their mean CPU time per message (ms), and how they
    got the messages (from the notice, `live`, or by table `reads`; `gaps` closed)."""
    latencies: list[float] = []
    cpu = 0.0
    counts = {"live": 0, "reads": 0, "gaps": 0}
    for proc in procs:
        with anyio.fail_after(60):
            report = json.loads(await _readline(proc))
            await proc.wait()
        latencies += report["latencies"]
        cpu += report["cpu_s"]
        for key in counts:
            counts[key] += report.get(key, 0)
    return latencies, cpu * 1000 / max(1, len(latencies)), counts


async def bare_latency(
    database: dbmod.Database, s: Settings
) -> tuple[list[float], float, dict[str, int]]:
    assert s.redis_url
    procs = await receivers(s, "bare")
    client = aioredis.Redis.from_url(s.redis_url)
    async with database.acquire() as conn:
        async def send(_i: int) -> None:
            t0 = time.monotonic()
            await conn.execute(BARE_INSERT, "x", {"t": t0})
            await client.publish(f"{s.namespace}:bare", repr(t0))

        await paced(LATENCY_MESSAGES, send)
    await client.aclose()
    return await collect(procs)


async def echo_latency(
    database: dbmod.Database, s: Settings
) -> tuple[list[float], float, dict[str, int]]:
    store = MessageStore(database)
    start = await store.max_id()
    for role in ROLES[:SUBSCRIBERS]:  # only this phase's messages: skip the earlier ones
        await store.advance_cursor(role, start)
    procs = await receivers(s, "echo")
    async with Publisher(s.bus, database) as pub:
        async def send(_i: int) -> None:
            await pub.publish(Message.build(from_role="ceo", subject="bench",
                                            body={"t": time.monotonic()}))

        await paced(LATENCY_MESSAGES, send)
    return await collect(procs)


async def echo_latency_one_process(s: Settings, database: dbmod.Database) -> list[float]:
    """The 6 subscribers as tasks of the publisher's own process (the previous layout,
    kept for comparison: one interpreter, one pool, no CPU contention between them)."""
    latencies: list[float] = []
    done = anyio.Event()

    async def handler(message: StoredMessage) -> None:
        latencies.append(time.monotonic() - message.body["t"])
        if len(latencies) >= LATENCY_MESSAGES * SUBSCRIBERS:
            done.set()

    store = MessageStore(database)
    start = await store.max_id()
    for role in ROLES[:SUBSCRIBERS]:
        await store.advance_cursor(role, start)
    subs = [Subscriber(s.bus, database, role, handler) for role in ROLES[:SUBSCRIBERS]]
    async with anyio.create_task_group() as tg, Publisher(s.bus, database) as pub:
        for sub in subs:
            await tg.start(sub.run)

        async def send(_i: int) -> None:
            await pub.publish(Message.build(from_role="ceo", subject="bench",
                                            body={"t": time.monotonic()}))

        await paced(LATENCY_MESSAGES, send)
        with anyio.fail_after(30):
            await done.wait()
        tg.cancel_scope.cancel()
    return latencies


# ---------------------------------------------------------------- throughput


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
    await dbmod.migrate(s.database)
    database = await dbmod.Database.open(s.database, min_size=2, max_size=CONCURRENCY + 4)
    try:
        async with database.acquire() as conn:
            await conn.execute(
                "CREATE TABLE bare (id bigserial PRIMARY KEY, subject text, body jsonb)"
            )

        async def bare_rate() -> float:
            async with database.acquire() as conn:

                async def bare_insert() -> int:
                    await conn.execute(BARE_INSERT, "x", {"a": 1})
                    return 1

                return await rate(bare_insert)

        async def bare_insert_pooled() -> int:  # each worker holds its own connection
            async with database.acquire() as conn:
                await conn.execute(BARE_INSERT, "x", {"a": 1})
            return 1

        bare_concurrent = await rate(bare_insert_pooled, workers=CONCURRENCY)

        def message() -> Message:
            return Message.build(from_role="cto", subject="bench", body={"a": 1})

        async with Publisher(s.bus, database) as pub:
            async def one() -> int:
                await pub.publish(message())
                return 1

            async def confirmed() -> int:
                await pub.publish(message(), confirm=True)
                return 1

            async def many() -> int:
                await pub.publish_many([message() for _ in range(BATCH)])
                return BATCH

            # One publisher against one bare connection: the figure the machine's noise
            # moves most, so ROUNDS alternating rounds, and the medians.
            bares: list[float] = []
            singles: list[float] = []
            for _ in range(ROUNDS):
                bares.append(await bare_rate())
                singles.append(await rate(one, settle=pub.drain))
            bare, single = statistics.median(bares), statistics.median(singles)
            single_confirmed = await rate(confirmed)
            concurrent = await rate(one, workers=CONCURRENCY, settle=pub.drain)
            batched = await rate(many, settle=pub.drain)

        client = aioredis.Redis.from_url(redis_url)

        async def bare_publish() -> int:
            await client.publish(f"{ns}:nobody", "x")
            return 1

        redis_rate = await rate(bare_publish)
        await client.aclose()

        emit("publish_per_s", single, "bare asyncpg INSERT+commit, 1 connection", bare,
             publishers=1, target_ratio=0.7, medians_of=ROUNDS,
             round_ratios=[round(o / b, 3) for o, b in zip(singles, bares, strict=True)])
        emit("publish_confirmed_per_s", single_confirmed, "bare asyncpg INSERT+commit, 1 connection",
             bare, publishers=1)
        emit("publish_concurrent_per_s", concurrent,
             f"bare asyncpg INSERT+commit, {CONCURRENCY} connections", bare_concurrent,
             publishers=CONCURRENCY, target_ratio=0.7)
        emit("publish_many_per_s", batched, "bare asyncpg INSERT+commit, 1 connection", bare,
             batch=BATCH, target=20000)
        emit("redis_publish_per_s", redis_rate, "bare asyncpg INSERT+commit, 1 connection", bare)

        raw, raw_cpu, _ = await bare_latency(database, s)
        ours, our_cpu, how = await echo_latency(database, s)
        baseline = f"bare INSERT + PUBLISH to {SUBSCRIBERS} redis-py reader processes"
        cpu = {"receiver_cpu_ms_per_msg": round(our_cpu, 3),
               "baseline_receiver_cpu_ms_per_msg": round(raw_cpu, 3)}
        emit("latency_p50_ms", pct(ours, 0.5), baseline, pct(raw, 0.5), rate=RATE,
             subscribers=SUBSCRIBERS, deployment=DEPLOYMENT)
        emit("latency_p99_ms", pct(ours, 0.99), baseline, pct(raw, 0.99), rate=RATE,
             subscribers=SUBSCRIBERS, deployment=DEPLOYMENT, target_ms=10,
             mean_ms=round(statistics.fmean(ours) * 1000, 3), **cpu, **how)
        inproc = await echo_latency_one_process(s, database)
        emit("latency_p99_ms_one_process", pct(inproc, 0.99), baseline, pct(raw, 0.99),
             rate=RATE, subscribers=SUBSCRIBERS, p50_ms=round(pct(inproc, 0.5), 3),
             deployment=f"{SUBSCRIBERS} subscribers as tasks in the publisher's process")
        # No Redis (the embedded default): the same signed notices over NOTIFY.
        notify = s.model_copy(update={"redis_url": None})  # same pool
        by_notify, notify_cpu, _ = await echo_latency(database, notify)
        emit("latency_p99_ms_notify", pct(by_notify, 0.99), baseline, pct(raw, 0.99),
             rate=RATE, subscribers=SUBSCRIBERS, p50_ms=round(pct(by_notify, 0.5), 3),
             receiver_cpu_ms_per_msg=round(notify_cpu, 3),
             deployment=f"{DEPLOYMENT}, Postgres NOTIFY instead of Redis")
    finally:
        leaks = database.leaks
        await database.close()
        await dbmod.drop_namespace(s.database)
        if pg is not None:
            await anyio.to_thread.run_sync(pg.destroy)
        if rd is not None:
            rd.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # the run's state directory
    if leaks:
        raise SystemExit(f"{leaks} connection(s) released inside a transaction")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        anyio.run(child, sys.argv[2], sys.argv[3])
    else:
        anyio.run(main)
