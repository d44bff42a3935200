"""Benchmarks of the governor (one JSON line per figure, baseline in the same run).

- claim_rate: tasks claimed per second by the claim statement with the governor's
  checks (budgets of the organisation and of every role, an account pause in force)
  against the same statement with them switched off, rounds alternating; in batches
  of 100 (the pool's busy path) and one at a time (the worst case for a per-claim
  cost). Target: ratio >= 0.9.
- ledger_write: what writing a run's ledger row adds to storing its result: one
  completion per statement (a pool of one slot) with a `RunRecord` against without.
  Target: under 1 ms per run.

    python -m bench.governor
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

import anyio

from bench._common import bench_settings, emit
from echo.db import Database
from echo.work import Completion, NewTask, TaskQueue
from echo.work.governor import ClaimGate, Governor, RunRecord
from echo.work.queue import UNGOVERNED

ROLES = ["ceo", "cto", "chro", "product_manager", "senior_architect", "operations_head"]


async def fill(db: Database, n: int) -> None:
    q = TaskQueue(db)
    for start in range(0, n, 5000):
        await q.enqueue_many([NewTask(f"t{i}", task_type="claude", role=ROLES[i % len(ROLES)])
                              for i in range(start, min(n, start + 5000))])


async def clear(db: Database) -> None:
    async with db.acquire() as conn:
        await conn.execute("TRUNCATE agent_tasks, agent_actions")


async def claim_round(db: Database, gate: ClaimGate, n: int, batch: int) -> float:
    await clear(db)
    await fill(db, n)
    q = TaskQueue(db)
    ids = [f"bench:0:{i}" for i in range(batch)]
    started = time.perf_counter()
    claimed = 0
    while got := await q.claim(ids, task_types=["claude"], gate=gate):
        claimed += len(got)
    return claimed / (time.perf_counter() - started)


async def claim_rates(db: Database, gate: ClaimGate, batch: int, n: int,
                      rounds: int = 3) -> tuple[float, float]:
    governed, bare = [], []
    for _ in range(rounds):
        bare.append(await claim_round(db, UNGOVERNED, n, batch))
        governed.append(await claim_round(db, gate, n, batch))
    return statistics.median(governed), statistics.median(bare)


async def complete_one_by_one(db: Database, n: int, with_run: bool, gate: ClaimGate) -> float:
    """Seconds per completion statement, each storing one result (and its ledger row)."""
    await clear(db)
    await fill(db, n)
    q = TaskQueue(db)
    tasks = []
    while got := await q.claim([f"bench:0:{i}" for i in range(100)], task_types=["claude"]):
        tasks += got
    now = datetime.now(UTC)
    started = time.perf_counter()
    for t in tasks:
        run = RunRecord(kind="task", outcome="ok", role=t.role, task_id=t.task_id,
                        attempt=t.attempt, model="claude-sonnet-4-5", started_at=now,
                        duration_ms=1200, cost_usd=0.0001, input_tokens=2000,
                        output_tokens=300, turns=1, session_id="s") if with_run else None
        await q.complete([Completion(t, {"ok": True}, 0.0001, "s", run)], gate=gate)
    return (time.perf_counter() - started) / len(tasks)


async def main() -> None:
    async with bench_settings("governor", redis=False) as s:
        db = await Database.open(s.database, max_size=2)
        try:
            governor = Governor(s.governor.model_copy(update={"budget_daily_usd": 1_000_000.0}), db)
            await governor.sync({r: 100_000.0 for r in ROLES})
            # An account paused (another one): the pause list is read and compared too.
            async with db.acquire() as conn:
                await conn.execute("INSERT INTO claude_pauses (account, until, reason) "
                                   "VALUES ('other', $1, 'session limit')",
                                   datetime.now(UTC) + timedelta(hours=1))
            gate = governor.gate
            for batch, n in ((100, 10_000), (1, 2_000)):
                value, base = await claim_rates(db, gate, batch, n)
                emit("governor", f"claim_rate_batch_{batch}", value,
                     baseline="the same claim without the governor's checks",
                     baseline_value=base, unit="claims/s", target=">= 0.9")
            bare, ledger = [], []
            for _ in range(3):
                bare.append(await complete_one_by_one(db, 1000, False, gate))
                ledger.append(await complete_one_by_one(db, 1000, True, gate))
            per_run = (statistics.median(ledger) - statistics.median(bare)) * 1000
            emit("governor", "ledger_write_ms_per_run", per_run,
                 baseline="storing a result without a ledger row (ms per statement)",
                 baseline_value=statistics.median(bare) * 1000, unit="ms",
                 with_ledger_ms=round(statistics.median(ledger) * 1000, 3), target="< 1 ms")
        finally:
            await db.close()


if __name__ == "__main__":
    anyio.run(main)
