"""The workflow's state machine without Postgres: the participant's and the driver's
parts run on the in-memory adapters (echo.org.workflow.memory, harness.py), with the
keyword and template fallbacks (no LLM decider), so every transition, the idempotence
of every part and the containment of failures are checked in milliseconds."""

from __future__ import annotations

import pytest

from echo.bus import Kind
from echo.errors import StoreRejected, StoreUnavailable
from echo.org.workflow import SKIPPED, Phase, consensus
from tests.unit.org.workflow.harness import PHASE_TIMEOUT, agent_on, organisation


async def test_a_workflow_runs_from_selection_to_done() -> None:
    org = organisation(["ceo", "cto", "chro"])
    store = org.store
    wf = await org.start(["ceo", "cto", "chro"], rounds=2)

    await org.run_until(wf, Phase.EXECUTING)
    joined = {p.role: p.participate for p in await store.participants(wf)}
    assert joined == {"ceo": True, "cto": True, "chro": False}  # budget, api; nothing for HR
    positions = sorted((m.from_role, m.body["round"]) for m in await store.thread(wf)
                       if m.kind == Kind.DISCUSSION)
    assert positions == [("ceo", 1), ("ceo", 2), ("cto", 1), ("cto", 2)]
    decision = await store.decision_of(wf)
    assert decision is not None and decision.outcome == "approved" and decision.source == "fallback"
    assert {t["role"] for t in decision.tasks} == {"ceo", "cto"}
    assert all(t["task_id"] for t in decision.tasks) and len(store.task_rows) == 2

    await org.tick()
    assert (await org.workflow(wf)).phase == Phase.EXECUTING  # the tasks are not final yet
    for task_id in store.task_rows:
        org.tasks.finish(task_id, "failed", f"{SKIPPED} (ClaudeNotInstalled: no claude)")
    await org.run_until(wf, Phase.DONE)
    reports = [m for m in await store.thread(wf) if m.kind == Kind.STATUS and "task" in m.body]
    assert sorted(m.body["task"]["status"] for m in reports) == ["skipped", "skipped"]
    assert sorted(m.from_role for m in reports) == ["ceo", "cto"]  # each role reports its own


async def test_a_workflow_with_a_repository_gives_its_tasks_that_repository() -> None:
    org = organisation(["ceo", "cto"])
    repo = {"name": "app", "source": "/src/app", "base_branch": "main", "test_command": None,
            "push": False}
    wf = await org.start(["ceo", "cto"], repo=repo)
    plain = await org.start(["ceo", "cto"])
    await org.run_until(wf, Phase.EXECUTING)
    await org.run_until(plain, Phase.EXECUTING)
    by_workflow: dict[str, list[dict[str, object]]] = {}
    for row in org.store.task_rows.values():
        payload = dict(row.task.payload)
        by_workflow.setdefault(str(payload["workflow"]), []).append(payload)
    assert by_workflow[wf] and all(p["repo"] == repo for p in by_workflow[wf])
    assert by_workflow[plain] and all("repo" not in p for p in by_workflow[plain])


async def test_every_part_is_idempotent() -> None:
    org = organisation(["ceo", "cto"])
    wf_id = await org.start(["ceo", "cto"], rounds=1)
    await org.run_until(wf_id, Phase.EXECUTING)
    posts, tasks = len(org.store.messages), len(org.store.task_rows)
    # A CEO restarted half-way does its steps again: nothing is posted or enqueued twice.
    now = await org.workflow(wf_id)
    deciding = now.model_copy(update={"phase": Phase.DECIDING})
    await org.driver.decide(deciding, ["ceo", "cto"])
    for part in org.parts:
        await part.my_part(now)
    await org.driver.my_part(now)
    assert (len(org.store.messages), len(org.store.task_rows)) == (posts, tasks)
    assert not await org.driver.advance(deciding, Phase.EXECUTING)  # read in a phase it has left
    assert await org.at(wf_id) == (Phase.EXECUTING, 0)


async def test_the_deadline_moves_a_phase_on_without_the_missing_parts() -> None:
    org = organisation(["ceo", "cto"])
    wf = await org.start(["ceo", "cto", "chro"], rounds=1)  # chro is asked but never answers
    await org.tick()
    org.clock.advance(PHASE_TIMEOUT - 0.001)
    await org.tick()
    assert await org.at(wf) == (Phase.SELECTING, 0)
    org.clock.advance(0.001)  # the deadline itself
    await org.tick()
    assert await org.at(wf) == (Phase.DISCUSSING, 1)


async def test_nobody_taking_part_goes_straight_to_an_escalated_decision() -> None:
    org = organisation(["ceo", "chro"])
    wf = await org.start(["chro"], subject="Repaint the office", body="nothing else")
    await org.tick()
    assert not (await org.store.participants(wf))[0].participate
    assert (await org.workflow(wf)).phase == Phase.DECIDING
    assert (await org.workflow(wf)).consensus == "escalated"


async def test_a_role_gone_by_the_executing_deadline_is_settled_by_the_driver() -> None:
    org = organisation(["ceo", "cto"])
    wf = await org.start(["ceo", "cto"], rounds=1)
    await org.run_until(wf, Phase.EXECUTING)
    by_role = {row.task.role: i for i, row in org.store.task_rows.items()}
    org.tasks.finish(by_role["ceo"], "completed")
    org.down("cto")  # the CTO's agent is gone; its task stays pending
    await org.tick()
    assert (await org.workflow(wf)).phase == Phase.EXECUTING
    org.clock.advance(PHASE_TIMEOUT)
    await org.tick()
    assert (await org.workflow(wf)).phase == Phase.DONE
    assert org.store.task_rows[by_role["cto"]].status == "cancelled"
    note = next(m.body["task"]["note"] for m in org.store.messages
                if m.kind == Kind.STATUS and m.body.get("task", {}).get("role") == "cto")
    assert "no cto agent was up" in note


def test_consensus_rules() -> None:
    assert consensus({"a": "approve", "b": "reject"}, ["a", "b"], "majority") == "escalated"
    assert consensus({"a": "approve", "b": "approve"}, ["a", "b", "c"], "majority") == "approved"
    assert consensus({"a": "approve", "b": "approve"}, ["a", "b", "c"], "unanimous") == "escalated"
    assert consensus({}, [], "unanimous") == "escalated"


async def test_a_permanent_error_stops_that_workflow_only() -> None:
    """Bug 2: a data error in one workflow's step (here Postgres refusing a NUL byte)
    marks that workflow `error` with the reason; the next one goes on in the same pass."""
    org = organisation(["cto"])
    agent = agent_on(org, "cto")
    broken = await org.start(["cto"])
    fine = await org.start(["cto"])
    org.store.fail_on["record_participant"] = StoreRejected(
        "unsupported Unicode escape sequence", sqlstate="22P05")
    await agent.step()
    assert (await org.workflow(broken)).phase == Phase.ERROR
    assert ((await org.workflow(broken)).error or "").startswith(
        "cto could not do its part of selecting: the database refused it: unsupported Unicode")
    assert [p.role for p in await org.store.participants(fine)] == ["cto"]
    assert [w.id for w in await org.store.open()] == [fine]


async def test_an_outage_defers_the_step_and_a_bug_stays_in_its_workflow() -> None:
    org = organisation(["cto"])
    agent = agent_on(org, "cto")
    first = await org.start(["cto"])
    org.store.fail_on["record_participant"] = StoreUnavailable("Postgres is unavailable")
    with pytest.raises(StoreUnavailable):  # the run loop defers the whole step and degrades
        await agent.step()
    assert (await org.workflow(first)).phase == Phase.SELECTING
    org.store.fail_on["record_participant"] = RuntimeError("a bug")
    second = await org.start(["cto"])
    await agent.step()
    assert agent._failed == f"{first}: RuntimeError: a bug"
    assert (await org.workflow(first)).phase == Phase.SELECTING  # retried at the next tick
    assert [w for (w, _) in org.store.participant_rows] == [second]
    await agent.step()
    assert {w for (w, _) in org.store.participant_rows} == {first, second}
