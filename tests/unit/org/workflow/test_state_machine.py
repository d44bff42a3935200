"""The workflow's state machine without Postgres: the participant's and the driver's
parts run against an in-memory store (fake_store.py), with the keyword and template
fallbacks (no LLM decider), so every transition, the idempotence of every part and
the containment of failures are checked in milliseconds."""

from __future__ import annotations

import pytest

from echo.bus import Kind
from echo.config import Settings
from echo.errors import StoreRejected, StoreUnavailable
from echo.org.roles import load_roles
from echo.org.workflow import (
    SKIPPED,
    Driver,
    Phase,
    RolePart,
    WorkflowAgent,
    consensus,
)
from tests.unit.org.workflow.fake_store import FakeQueue, FakeStore

ROLES = load_roles(Settings().agents_dir)


def organisation(store: FakeStore, names: list[str]) -> tuple[Driver, list[RolePart], FakeQueue]:
    queue = FakeQueue(store)
    driver = Driver(ROLES["ceo"], store, store.publish, queue, roles=ROLES)
    parts = [RolePart(ROLES[n], store, store.publish) for n in names if n != "ceo"]
    store.live = set(names)
    return driver, parts, queue


async def tick(store: FakeStore, driver: Driver, parts: list[RolePart]) -> None:
    """One wake-up of every agent, the CEO last (it then sees everyone's parts)."""
    for wf in await store.open():
        for part in parts:
            await part.my_part(wf)
        await driver.my_part(wf)
    for wf in await store.open():
        await driver.drive(wf)


async def run_until(store: FakeStore, driver: Driver, parts: list[RolePart], wf_id: str,
                    phase: Phase, ticks: int = 20) -> None:
    for _ in range(ticks):
        if store.workflows[wf_id].phase == phase:
            return
        await tick(store, driver, parts)
    assert store.workflows[wf_id].phase == phase


async def test_a_workflow_runs_from_selection_to_done() -> None:
    store = FakeStore()
    driver, parts, queue = organisation(store, ["ceo", "cto", "chro"])
    wf = store.add(roles=["ceo", "cto", "chro"], rounds=2)

    await run_until(store, driver, parts, wf.id, Phase.EXECUTING)
    joined = {p.role: p.participate for p in await store.participants(wf.id)}
    assert joined == {"ceo": True, "cto": True, "chro": False}  # budget, api; nothing for HR
    positions = sorted((m.from_role, m.body["round"]) for m in await store.thread(wf.id)
                       if m.kind == Kind.DISCUSSION)
    assert positions == [("ceo", 1), ("ceo", 2), ("cto", 1), ("cto", 2)]
    decision = await store.decision_of(wf.id)
    assert decision is not None and decision.outcome == "approved" and decision.source == "fallback"
    assert {t["role"] for t in decision.tasks} == {"ceo", "cto"}
    assert all(t["task_id"] for t in decision.tasks) and queue.enqueued == 2

    await tick(store, driver, parts)
    assert store.workflows[wf.id].phase == Phase.EXECUTING  # the tasks are not final yet
    for task_id in store.task_rows:
        store.finish_task(task_id, "failed", f"{SKIPPED} (ClaudeNotInstalled: no claude)")
    await run_until(store, driver, parts, wf.id, Phase.DONE)
    reports = [m.body["task"] for m in await store.thread(wf.id) if m.kind == Kind.STATUS
               and "task" in m.body]
    assert sorted(r["status"] for r in reports) == ["skipped", "skipped"]
    assert sorted(m.from_role for m in await store.thread(wf.id) if m.kind == Kind.STATUS
                  and "task" in m.body) == ["ceo", "cto"]  # each role reports its own


async def test_a_workflow_with_a_repository_gives_its_tasks_that_repository() -> None:
    store = FakeStore()
    driver, parts, _ = organisation(store, ["ceo", "cto"])
    repo = {"name": "app", "source": "/src/app", "base_branch": "main", "test_command": None,
            "push": False}
    wf = store.add(roles=["ceo", "cto"], repo=repo)
    plain = store.add(roles=["ceo", "cto"])
    await run_until(store, driver, parts, wf.id, Phase.EXECUTING)
    await run_until(store, driver, parts, plain.id, Phase.EXECUTING)
    by_workflow: dict[str, list[dict[str, object]]] = {}
    for t in store.task_rows.values():
        by_workflow.setdefault(str(t["payload"]["workflow"]), []).append(t["payload"])
    assert by_workflow[wf.id] and all(p["repo"] == repo for p in by_workflow[wf.id])
    assert by_workflow[plain.id] and all("repo" not in p for p in by_workflow[plain.id])


async def test_every_part_is_idempotent() -> None:
    store = FakeStore()
    driver, parts, queue = organisation(store, ["ceo", "cto"])
    wf = store.add(roles=["ceo", "cto"], rounds=1)
    await run_until(store, driver, parts, wf.id, Phase.EXECUTING)
    posts, tasks = len(store.messages), queue.enqueued
    # A CEO restarted half-way does its steps again: nothing is posted or enqueued twice.
    now = store.workflows[wf.id]
    deciding = now.model_copy(update={"phase": Phase.DECIDING})
    await driver.decide(deciding, ["ceo", "cto"])
    for part in parts:
        await part.my_part(now)
    await driver.my_part(now)
    assert (len(store.messages), queue.enqueued) == (posts, tasks)
    assert not await driver.advance(deciding, Phase.EXECUTING)  # read in a phase it has left


async def test_the_deadline_moves_a_phase_on_without_the_missing_parts() -> None:
    store = FakeStore()
    driver, parts, _ = organisation(store, ["ceo", "cto"])
    wf = store.add(roles=["ceo", "cto", "chro"], rounds=1)  # chro is asked but never answers
    await tick(store, driver, parts)
    assert store.workflows[wf.id].phase == Phase.SELECTING
    store.overdue(wf.id)
    await tick(store, driver, parts)
    assert store.workflows[wf.id].phase == Phase.DISCUSSING and store.workflows[wf.id].round == 1


async def test_nobody_taking_part_goes_straight_to_an_escalated_decision() -> None:
    store = FakeStore()
    driver, parts, _ = organisation(store, ["ceo", "chro"])
    wf = store.add(roles=["chro"])
    store.workflows[wf.id] = wf.model_copy(update={"subject": "Repaint the office",
                                                   "body": "nothing else"})
    await tick(store, driver, parts)
    assert not (await store.participants(wf.id))[0].participate
    assert store.workflows[wf.id].phase == Phase.DECIDING
    assert store.workflows[wf.id].consensus == "escalated"


async def test_a_role_gone_by_the_executing_deadline_is_settled_by_the_driver() -> None:
    store = FakeStore()
    driver, parts, _ = organisation(store, ["ceo", "cto"])
    wf = store.add(roles=["ceo", "cto"], rounds=1)
    await run_until(store, driver, parts, wf.id, Phase.EXECUTING)
    by_role = {row["assigned_role"]: i for i, row in store.task_rows.items()}
    store.finish_task(by_role["ceo"], "completed")
    store.live = {"ceo"}  # the CTO's agent is gone; its task stays pending
    parts = []
    await tick(store, driver, parts)
    assert store.workflows[wf.id].phase == Phase.EXECUTING
    store.overdue(wf.id)
    await tick(store, driver, parts)
    assert store.workflows[wf.id].phase == Phase.DONE
    assert store.task_rows[by_role["cto"]]["status"] == "cancelled"
    note = next(m.body["task"]["note"] for m in store.messages
                if m.kind == Kind.STATUS and m.body.get("task", {}).get("role") == "cto")
    assert "no cto agent was up" in note


def test_consensus_rules() -> None:
    assert consensus({"a": "approve", "b": "reject"}, ["a", "b"], "majority") == "escalated"
    assert consensus({"a": "approve", "b": "approve"}, ["a", "b", "c"], "majority") == "approved"
    assert consensus({"a": "approve", "b": "approve"}, ["a", "b", "c"], "unanimous") == "escalated"
    assert consensus({}, [], "unanimous") == "escalated"


def agent_on(store: FakeStore, role: str) -> WorkflowAgent:
    agent = WorkflowAgent(Settings(), None, ROLES[role])  # type: ignore[arg-type]
    agent.store = store
    agent.part = agent.make_part(store.publish)
    return agent


async def test_a_permanent_error_stops_that_workflow_only() -> None:
    """Bug 2: a data error in one workflow's step (here Postgres refusing a NUL byte)
    marks that workflow `error` with the reason; the next one goes on in the same pass."""
    store = FakeStore()
    agent = agent_on(store, "cto")
    broken = store.add(roles=["cto"])
    fine = store.add(roles=["cto"])
    store.fail_on["record_participant"] = StoreRejected(
        "unsupported Unicode escape sequence", sqlstate="22P05")
    await agent.step()
    assert store.workflows[broken.id].phase == Phase.ERROR
    assert (store.workflows[broken.id].error or "").startswith(
        "cto could not do its part of selecting: the database refused it: unsupported Unicode")
    assert [p.role for p in await store.participants(fine.id)] == ["cto"]
    assert [w.id for w in await store.open()] == [fine.id]


async def test_an_outage_defers_the_step_and_a_bug_stays_in_its_workflow() -> None:
    store = FakeStore()
    agent = agent_on(store, "cto")
    first = store.add(roles=["cto"])
    store.fail_on["record_participant"] = StoreUnavailable("Postgres is unavailable")
    with pytest.raises(StoreUnavailable):  # the run loop defers the whole step and degrades
        await agent.step()
    assert store.workflows[first.id].phase == Phase.SELECTING
    store.fail_on["record_participant"] = RuntimeError("a bug")
    second = store.add(roles=["cto"])
    await agent.step()
    assert agent._failed == f"{first.id}: RuntimeError: a bug"
    assert store.workflows[first.id].phase == Phase.SELECTING  # retried at the next tick
    assert [p.workflow_id for p in store.people.values()] == [second.id]
    await agent.step()
    assert {p.workflow_id for p in store.people.values()} == {first.id, second.id}
