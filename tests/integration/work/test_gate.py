"""The governor's gate inside the claim (010, 030) on Postgres: it answers nothing while
nothing is governed, and governs the moment a budget, a burst limit or a pause exists,
with the same decisions as before."""

from __future__ import annotations

from echo import db as dbmod
from echo.work.governor.gate import ClaimGate
from echo.work.queue import TaskQueue
from echo.work.tasks import Task

GATE_ROWS = "SELECT count(*) FROM claude_gate(now(), 'UTC', NULL)"


async def claim(q: TaskQueue, worker: str) -> list[Task]:
    return await q.claim([worker], task_types=["claude", "noop"], gate=ClaimGate())


async def test_nothing_to_govern_answers_no_gate_row_and_claims_as_ungoverned(
        db: dbmod.Database) -> None:
    q = TaskQueue(db)
    await q.enqueue("a run", task_type="claude", role="cto")
    async with db.acquire() as conn:
        assert await conn.fetchval(GATE_ROWS) == 0
    [task] = await claim(q, "h:1:0")
    assert task.task_type == "claude" and task.budget_left_usd is None  # no budget applies


async def test_a_budget_or_a_burst_limit_turns_the_gate_on(db: dbmod.Database) -> None:
    q = TaskQueue(db)
    async with db.acquire() as conn:
        await conn.execute("INSERT INTO budgets (scope, key, daily_usd, source) "
                           "VALUES ('role', 'cto', 2.50, 'operator')")
        assert await conn.fetchval(GATE_ROWS) == 1
    await q.enqueue("a run", task_type="claude", role="cto")
    [task] = await claim(q, "h:1:0")
    assert task.budget_left_usd == 2.5  # the run's --max-budget-usd
    async with db.acquire() as conn:
        await conn.execute("DELETE FROM budgets")
        await conn.execute("INSERT INTO governor_config (burst_usd) VALUES (1.00)")
        assert await conn.fetchval(GATE_ROWS) == 1


async def test_a_pause_in_force_holds_claude_runs_and_an_expired_one_does_not(
        db: dbmod.Database) -> None:
    q = TaskQueue(db)
    async with db.acquire() as conn:
        await conn.execute("INSERT INTO claude_pauses (account, until, reason) "
                           "VALUES ('default', now() + interval '1 hour', 'session limit')")
    held = (await q.enqueue("a run", task_type="claude", role="cto")).task_id
    free = (await q.enqueue("no cost", task_type="noop", role="cto")).task_id
    assert [t.task_id for t in await claim(q, "h:1:0")] == [free]  # the Claude run waits
    assert await claim(q, "h:1:1") == []
    async with db.acquire() as conn:
        await conn.execute("UPDATE claude_pauses SET until = now() - interval '1 second'")
        assert await conn.fetchval(GATE_ROWS) == 0  # an expired pause governs nothing
    assert [t.task_id for t in await claim(q, "h:1:1")] == [held]
