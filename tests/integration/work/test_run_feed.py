"""Claude runs in the organisation's feed, and the figures of the console's charts, on
real Postgres.

A run's start (its session recorded at the CLI's `init`) and its end (its ledger row,
written with the task's result or failure) each write an audit row in the same
statement (migration 026): `run.started` says the role, the attempt and the attempt it
resumed; `run.ended` the outcome, cost and turns. A workflow question (a ledger row
without a task) is not announced. The charts: spend per role today by the database's
clock beside the budgets, and tasks finished per minute by outcome."""

from __future__ import annotations

import json
from typing import Any

from echo.config import Settings
from echo.db import Database
from echo.org.client import Client
from echo.work import Completion, Failure, TaskQueue
from echo.work.governor import Governor
from echo.work.governor.ledger import RunRecord
from echo.work.queue import SKIPPED
from echo.work.runs import PgRunStore
from tests.helpers import run_cli


async def run_events(db: Database) -> list[dict[str, Any]]:
    async with db.acquire() as conn:
        rows = await conn.fetch("SELECT action, subject_id, actor, details FROM agent_actions "
                                "WHERE subject_type = 'run' ORDER BY id")
    return [dict(r) for r in rows]


async def test_a_runs_start_and_end_are_in_the_feed(settings: Settings, db: Database) -> None:
    q, store = TaskQueue(db), PgRunStore(db)
    made = await q.enqueue("move the API", task_type="claude", role="cto")
    [task] = await q.claim(["w:1:0"], task_types=["claude"])
    assert await store.record_session(task, "s-1", "/w", None)
    assert await store.record_session(task, "s-1", "/w", None)  # written again: said once
    hung = RunRecord(kind="task", outcome="hung", role="cto", task_id=task.task_id,
                     attempt=task.attempt, cost_usd=0.12, turns=3, session_id="s-1")
    await q.fail([Failure(task, "no event for 300s", True, run=hung)])
    [again] = await q.claim(["w:2:0"], task_types=["claude"])
    assert await store.record_session(again, "s-1", "/w", resumed_attempt=1)
    ok = RunRecord(kind="task", outcome="ok", role="cto", task_id=task.task_id,
                   attempt=again.attempt, cost_usd=0.05, turns=5, session_id="s-1",
                   resumed_attempt=1)
    await q.complete([Completion(again, "done", 0.05, "s-1", run=ok)])
    await Governor(settings.governor, db).record([RunRecord(kind="question", outcome="ok", role="cto",
                                                   workflow_id="wf-1", step="select")])

    events = await run_events(db)
    assert [(e["action"], e["subject_id"], e["actor"]) for e in events] == [
        ("run.started", str(made.task_id), "cto"), ("run.ended", str(made.task_id), "cto"),
        ("run.started", str(made.task_id), "cto"), ("run.ended", str(made.task_id), "cto")]
    first, hung_end, resumed, ended = (e["details"] for e in events)
    assert (first["role"], first["attempt"], first["description"]) == ("cto", 1, "move the API")
    assert "resumed_attempt" not in first
    assert (hung_end["outcome"], hung_end["cost_usd"], hung_end["turns"]) == ("hung", 0.12, 3)
    assert (resumed["attempt"], resumed["resumed_attempt"]) == (2, 1)
    assert (ended["outcome"], ended["cost_usd"], ended["turns"], ended["attempt"]) == ("ok", 0.05, 5, 2)

    async with Client(settings, database=db) as c:  # the timeline's runs, one per attempt
        detail = await c.task(made.task_id)
    assert [(r.attempt, r.outcome, r.cost_usd, r.turns, r.resumed_attempt) for r in detail.runs] == [
        (1, "hung", 0.12, 3, None), (2, "ok", 0.05, 5, 1)]
    shown = await run_cli(settings, "tasks", "show", str(made.task_id), "--json")
    assert [(r["attempt"], r["outcome"]) for r in json.loads(shown.stdout)["runs"]] == [
        (1, "hung"), (2, "ok")]
    plain = (await run_cli(settings, "tasks", "show", str(made.task_id))).stdout
    assert "run of attempt 2: ok, $0.0500, 5 turn(s), resumed attempt 1" in plain


async def test_the_charts_add_up_what_was_spent_and_finished(settings: Settings, db: Database) -> None:
    governor = Governor(settings.governor, db)
    await governor.set_budget("role", "cto", 2.0, known_roles=["cto", "ceo"])
    await governor.record([
        RunRecord(kind="question", outcome="ok", role="cto", workflow_id="wf-1", cost_usd=0.4),
        RunRecord(kind="question", outcome="ok", role="cto", workflow_id="wf-1", cost_usd=0.35),
        RunRecord(kind="question", outcome="ok", role="ceo", workflow_id="wf-1", cost_usd=0.25)])
    q = TaskQueue(db)
    for n in range(4):
        await q.enqueue(f"t{n}", task_type="noop")
    claimed = await q.claim(["w:1:0", "w:1:1", "w:1:2", "w:1:3"], task_types=["noop"])
    await q.complete([Completion(t, "ok") for t in claimed[:2]])
    await q.fail([Failure(claimed[2], "boom", False), Failure(claimed[3], f"{SKIPPED} (x)", False)])

    async with db.acquire() as conn:  # the database's clock, in the governor's zone
        hour = await conn.fetchval("SELECT extract(hour FROM now() AT TIME ZONE $1)::int",
                                   settings.budget_timezone)
    async with Client(settings, database=db) as c:
        spend = await c.spend_chart()
        only = await c.spend_chart(role="ceo")
        finished = await c.finished_chart(minutes=10)
    lines = {r.role: r for r in spend.roles}
    assert spend.hour == hour and set(lines) == {"cto", "ceo"}
    assert (lines["cto"].spent_usd, lines["cto"].budget_usd, lines["cto"].runs) == (0.75, 2.0, 2)
    assert lines["cto"].hourly[-1] == 0.75 and len(lines["cto"].hourly) == hour + 1
    assert (lines["ceo"].spent_usd, lines["ceo"].budget_usd) == (0.25, None)
    assert [r.role for r in only.roles] == ["ceo"]
    assert finished.total == {"completed": 2, "failed": 1, "skipped": 1}
    assert finished.counts[-1] == finished.total and len(finished.counts) == 10
