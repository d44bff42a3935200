"""Work-queue benchmarks. Prints one JSON line per figure, each beside its baseline
measured in the same run (a ratio from one run is the figure that counts):

- `claim_rate`: raw SKIP LOCKED claims (the pool's claim query, 100 per transaction);
- `governed_claim`: the same claim of Claude tasks through the governor's gate as an
  agent's pool makes it, with nothing to govern (030: the gate answers no row), beside
  the same claim while one budget exists that never binds (the gate computes every
  budget's spend, the burst window and the pauses: what every claim paid before 030);
- `noop_throughput`: no-op tasks per second through 1, 2 and 4 `echoctl worker`
  processes, at steady state (between 10% and 90% done, and only once every worker
  process is ready), beside the claim rate and beside pgqueuer's figure on the same
  database, task count, probe and window, when pgqueuer is importable;
- `notify_latency`: enqueue-to-claim latency of one idle worker (p50/p99), which
  NOTIFY keeps far below the poll interval;
- `claude_overhead`: the executor's time over a bare `claude` run against the fake
  Anthropic API, and 10 concurrent runs against one.

Database: ECHO_BENCH_DATABASE_URL, else ECHO_TEST_DATABASE_URL, else the embedded
server; always in a fresh namespace that is dropped at the end. ECHO_BENCH_TASKS sets
the task count (20,000) and ECHO_BENCH_FIGURES a comma-separated subset of figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and `queue` would
# shadow the standard library's (which asyncio and anyio import).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from echo.config import Settings  # noqa: E402
from echo.db import Database, drop_namespace, migrate, resolve_dsn  # noqa: E402
from echo.work import ClaudeExecutor, NewTask, Task, TaskQueue  # noqa: E402
from echo.work.claude_cli import LOCAL_CLAUDE  # noqa: E402
from echo.work.governor.gate import ClaimGate  # noqa: E402

NOOP_TASKS = int(os.environ.get("ECHO_BENCH_TASKS", "20000"))
#: Comma-separated figures to measure (default: all), e.g. `claim_rate,noop_throughput`.
FIGURES = {f for f in os.environ.get("ECHO_BENCH_FIGURES", "").split(",") if f}


def wanted(figure: str) -> bool:
    return not FIGURES or figure in FIGURES


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def bench_settings() -> Settings:
    url = os.environ.get("ECHO_BENCH_DATABASE_URL") or os.environ.get("ECHO_TEST_DATABASE_URL")
    return Settings(database_url=url, namespace=f"bench_{os.getpid()}", pool_size=4)


async def fill(db: Database, n: int, task_type: str = "noop", **kw: object) -> None:
    q = TaskQueue(db)
    for start in range(0, n, 5000):
        await q.enqueue_many([NewTask(f"t{i}", task_type=task_type, **kw)  # type: ignore[arg-type]
                              for i in range(start, min(n, start + 5000))])


async def clear(db: Database) -> None:
    async with db.acquire() as conn:
        await conn.execute("TRUNCATE agent_tasks, agent_actions")


#: The baseline of `claim_rate`: the bare SKIP LOCKED claim (no ledger, no governor
#: gate), as the queue claimed before 010. It fires the same table triggers (the
#: lease fence, the audit and its NOTIFY), which are guarantees, not overhead.
BARE_CLAIM = """
UPDATE agent_tasks AS t
SET status = 'running', assigned_worker_id = $1, attempt = t.attempt + 1,
    started_at = now(), heartbeat_at = now(), lease_expires_at = now() + interval '30 seconds'
WHERE t.task_id IN (SELECT task_id FROM agent_tasks
                    WHERE status = 'pending' AND run_after <= now() AND task_type = ANY($2)
                    ORDER BY task_priority DESC, task_id LIMIT $3 FOR UPDATE SKIP LOCKED)
RETURNING t.*"""


async def claim_rate(db: Database, n: int = 10000, *, bare: bool = False,
                     governed: bool = False, batch_size: int = 100) -> float:
    await clear(db)
    await fill(db, n, "claude" if governed else "noop")
    q = TaskQueue(db)
    ids = [f"bench:0:{i}" for i in range(batch_size)]
    started = time.perf_counter()
    claimed = 0
    if bare:
        async with db.acquire() as conn:
            while batch := await conn.fetch(BARE_CLAIM, "bench:0:0", ["noop"], len(ids)):
                claimed += len(batch)
    elif governed:  # an agent's pool: its gate governs Claude runs
        while batch := await q.claim(ids, task_types=["claude"], gate=ClaimGate()):
            claimed += len(batch)
    else:
        while batch := await q.claim(ids, task_types=["noop"]):
            claimed += len(batch)
    return claimed / (time.perf_counter() - started)


async def governed_claim(db: Database) -> None:
    """`governed_claim` (module doc): alternating rounds, gate off and gate on."""
    for size, n in ((1, 2000), (100, 5000)):  # a pool with one free slot; a batch
        off, on = [], []
        for _ in range(3):
            off.append(await claim_rate(db, n, governed=True, batch_size=size))
            async with db.acquire() as conn:  # a budget no run comes near: all computed
                await conn.execute("INSERT INTO budgets (scope, key, daily_usd, source) "
                                   "VALUES ('org', '', 1000000, 'operator')")
            on.append(await claim_rate(db, n, governed=True, batch_size=size))
            async with db.acquire() as conn:
                await conn.execute("DELETE FROM budgets")
        rate, gated = statistics.median(off), statistics.median(on)
        emit(figure="governed_claim", claims_per_s=round(rate), batch=size,
             baseline="the same claim while a budget exists (the gate computed, as before 030)",
             baseline_claims_per_s=round(gated), ratio=round(rate / gated, 3),
             loadavg_1m=round(os.getloadavg()[0], 2))


class Workers:
    """Worker processes started for one measurement. Each says on stderr when it is
    ready (ECHO: `worker ... ready: ...`; the pgqueuer worker below: `ready`), so the
    measured window can start only once all of them run: with 4 workers on 2 cores,
    one worker's start-up (imports, connections) would otherwise overlap the others'
    steady state and be counted against whichever queue starts slower."""

    def __init__(self, argv: list[str], settings: Settings, dsn: str, count: int) -> None:
        env = {**os.environ, **settings.child_env(), "ECHO_DATABASE_URL": dsn}
        self.ready = 0
        self.procs = [subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                      for _ in range(count)]
        self.readers = [threading.Thread(target=self._read, args=(p,), daemon=True)
                        for p in self.procs]
        for t in self.readers:
            t.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if b"ready" in line:
                self.ready += 1
                break
        for _ in proc.stderr:  # keep draining so the child never blocks on a full pipe
            pass

    def all_ready(self) -> bool:
        return self.ready == len(self.procs)

    def stop(self) -> None:
        stop(self.procs)
        for t in self.readers:
            t.join(timeout=5)


async def steady_rate(done_count, n: int, workers: Workers,  # type: ignore[no-untyped-def]
                      limit: float = 60) -> float:
    """Tasks per second between 10% and 90% done, the window opening no earlier than
    the moment every worker is ready. 0.0 when 90% were done before that (too few
    tasks for the number of workers: raise ECHO_BENCH_TASKS)."""
    t10 = t90 = None
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        done = await done_count()
        now = time.perf_counter()
        if t10 is None and done >= n * 0.1 and workers.all_ready():
            t10, d10 = now, done
        if done >= n * 0.9:
            t90, d90 = now, done
            break
        await asyncio.sleep(0.02)
    if t10 is None or t90 is None or t90 == t10:
        return 0.0
    return (d90 - d10) / (t90 - t10)


def spawn(argv: list[str], settings: Settings, dsn: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.child_env(), "ECHO_DATABASE_URL": dsn}
    return subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def echo_throughput(db: Database, s: Settings, dsn: str, workers: int) -> float:
    await clear(db)
    await fill(db, NOOP_TASKS)

    # Done = the rows no longer live, as for pgqueuer (whose finished rows leave its
    # table): the same probe on both sides.
    async def done() -> int:
        async with db.acquire() as conn:
            return NOOP_TASKS - int(await conn.fetchval(
                "SELECT count(*) FROM agent_tasks WHERE status IN ('pending', 'running')"))

    procs = Workers(["-m", "echo", "worker", "--concurrency", "200", "--executor", "noop"],
                    s, dsn, workers)
    try:
        return await steady_rate(done, NOOP_TASKS, procs)
    finally:
        procs.stop()


async def pgqueuer_throughput(db: Database, s: Settings, dsn: str, workers: int) -> float | None:
    try:
        from pgqueuer import Queries
        from pgqueuer.db import AsyncpgDriver
    except ImportError:
        return None
    # A plain connection: ECHO's pool decodes jsonb, pgqueuer expects raw text.
    conn = await asyncpg.connect(dsn, server_settings={"search_path": s.namespace})
    try:
        queries = Queries(AsyncpgDriver(conn))
        if not await queries.schema_is_installed():
            await queries.install(create_schema=False)
        for start in range(0, NOOP_TASKS, 5000):
            n = min(NOOP_TASKS, start + 5000) - start
            await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
    finally:
        await conn.close()

    async def done() -> int:
        async with db.acquire() as conn:
            left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
        return NOOP_TASKS - int(left)

    procs = Workers([__file__, "--pgqueuer-worker"], s, dsn, workers)
    try:
        return await steady_rate(done, NOOP_TASKS, procs)
    finally:
        procs.stop()


async def pgqueuer_worker() -> None:
    """One pgqueuer worker process (run by the benchmark itself)."""
    from pgqueuer import Queries, QueueManager
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.domain.types import QueueExecutionMode

    s = Settings()
    conn = await asyncpg.connect(s.database_url, server_settings={"search_path": s.namespace})
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint("noop")
    async def noop(job: object) -> None:
        return None

    print("pgqueuer worker ready", file=sys.stderr, flush=True)
    await qm.run(batch_size=100, mode=QueueExecutionMode.drain)


async def wait_completed(q: TaskQueue, n: int) -> None:
    async with asyncio.timeout(60):
        while True:
            if (await q.counts())["completed"] >= n:
                return
            await asyncio.sleep(0.05)


async def notify_latency(db: Database, s: Settings, dsn: str, n: int = 200) -> list[float]:
    await clear(db)
    proc = spawn(["-m", "echo", "worker", "--concurrency", "4", "--executor", "noop"], s, dsn)
    q = TaskQueue(db)
    try:
        await q.enqueue("warm-up", task_type="noop")
        await wait_completed(q, 1)
        for i in range(n):
            await q.enqueue(f"t{i}", task_type="noop")
            await asyncio.sleep(0.01)
        await wait_completed(q, n + 1)
        async with db.acquire() as conn:
            rows = await conn.fetch("SELECT extract(epoch FROM started_at - created_at) AS d "
                                    "FROM agent_tasks WHERE task_description <> 'warm-up'")
        return sorted(float(r["d"]) * 1000 for r in rows)
    finally:
        stop([proc])


def _task(i: int) -> Task:
    return Task(i, "claude", "say hi", 0, None, f"bench:0:{i}", 1, 120, 0, 0, {},
                datetime.now(UTC))


async def claude_overhead(s: Settings) -> dict[str, float] | None:
    if not os.access(LOCAL_CLAUDE, os.X_OK):
        return None
    from tests.fakes.anthropic import FakeAnthropic

    with FakeAnthropic() as api, tempfile.TemporaryDirectory() as home:
        env = {**api.env(), "HOME": home, "CLAUDE_CONFIG_DIR": f"{home}/cfg"}
        bare_env = {"PATH": os.environ["PATH"], **env}
        executor = ClaudeExecutor(s.claude.model_copy(update={"claude_bin": str(LOCAL_CLAUDE)}), s.database,
                                  env=env, cwd=Path(home))
        bare, wrapped = [], []
        for i in range(5):
            t = time.perf_counter()
            await asyncio.to_thread(
                subprocess.run, [str(LOCAL_CLAUDE), "-p", "--output-format", "json"],
                input=b"say hi", env=bare_env, cwd=home, capture_output=True, check=True)
            bare.append(time.perf_counter() - t)
            t = time.perf_counter()
            await executor.execute(_task(i))
            wrapped.append(time.perf_counter() - t)
        one = statistics.median(wrapped)
        t = time.perf_counter()
        await asyncio.gather(*(executor.execute(_task(100 + i)) for i in range(10)))
        ten = time.perf_counter() - t
    return {"bare_ms": statistics.median(bare) * 1000, "executor_ms": one * 1000,
            "overhead_ms": (one - statistics.median(bare)) * 1000,
            "ten_concurrent_ms": ten * 1000, "ten_vs_one": ten / one}


async def main() -> None:
    s = bench_settings()
    dsn = await resolve_dsn(s.database)
    s = s.model_copy(update={"database_url": dsn})
    await migrate(s.database)
    db = await Database.open(s.database, max_size=4)
    try:
        ours, bare = [], []
        for _ in range(3):  # alternating rounds: the machine's load hits both alike
            ours.append(await claim_rate(db, 5000))
            bare.append(await claim_rate(db, 5000, bare=True))
        rate, bare_rate = statistics.median(ours), statistics.median(bare)
        emit(figure="claim_rate", claims_per_s=round(rate), batch=100, connections=1,
             baseline="bare SKIP LOCKED claim, same triggers", baseline_claims_per_s=round(bare_rate),
             ratio=round(rate / bare_rate, 3), loadavg_1m=round(os.getloadavg()[0], 2))
        if wanted("governed_claim"):
            await governed_claim(db)
        pgq = {}
        for workers in (1, 2, 4) if wanted("noop_throughput") else ():
            got = await echo_throughput(db, s, dsn, workers)
            line: dict[str, object] = {
                "figure": "noop_throughput", "workers": workers, "tasks_per_s": round(got),
                "claim_rate": round(rate), "tasks": NOOP_TASKS}
            if workers == 4 or workers == 1:
                other = await pgqueuer_throughput(db, s, dsn, workers)
                if other is not None:
                    pgq[workers] = other
                    line.update(pgqueuer_tasks_per_s=round(other),
                                vs_pgqueuer=round(got / other, 2) if other else None)
            emit(**line)
        lat = await notify_latency(db, s, dsn) if wanted("notify_latency") else None
        if lat:
            emit(figure="notify_latency", p50_ms=round(lat[len(lat) // 2], 2),
                 p99_ms=round(lat[int(len(lat) * 0.99) - 1], 2),
                 poll_interval_ms=s.worker_check_interval * 1000,
                 claim_rate=round(rate), samples=len(lat))
        claude = await claude_overhead(s) if wanted("claude_overhead") else None
        if claude is not None:
            emit(figure="claude_overhead", **{k: round(v, 2) for k, v in claude.items()},
                 claim_rate=round(rate))
    finally:
        await db.close()
        await drop_namespace(s.database)


if __name__ == "__main__":
    if "--pgqueuer-worker" in sys.argv:
        asyncio.run(pgqueuer_worker())
    else:
        asyncio.run(main())
