"""The collaborative workflow with real agent processes (`echoctl up`) and no Claude:
every LLM step falls back (keyword self-selection, templated positions, votes and
decision), the fallback is recorded as such, and the work the CEO assigns is
`skipped: claude unavailable`, never completed. Also: a participant killed in the
middle of the discussion, and a CEO that is down when the deadline passes."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime
from typing import Any

from echo.config import Settings
from echo.db import Database
from echo.org.node.state import read_org
from echo.org.workflow import WorkflowStore
from tests import helpers as org_tests
from tests.helpers import run_cli, wait_until

ROLES = ["ceo", "cto", "chro"]


async def snapshot(db: Database, workflow_id: str) -> dict[str, Any]:
    """Everything about one workflow, as plain data (what `workflow show --json` holds)."""
    return (await WorkflowStore(db).detail(workflow_id)).model_dump()
NO_CLAUDE = {"ECHO_CLAUDE_BIN": "/nonexistent/claude"}


async def up(s: Settings, roles: list[str] = ROLES) -> None:
    started = await run_cli(s, "up", "--roles", ",".join(roles), "--detach", timeout=120, **NO_CLAUDE)
    assert started.returncode == 0, started.stderr
    await wait_until(org_tests.all_in(s, "healthy", roles), timeout=60, interval=0.1)


async def start(s: Settings, subject: str, *args: str) -> str:
    made = await run_cli(s, "workflow", "start", subject, "--json", *args, **NO_CLAUDE)
    assert made.returncode == 0, made.stderr
    workflow_id: str = json.loads(made.stdout)["workflow"]["id"]
    return workflow_id


def phase_is(db: Database, workflow_id: str, phase: str, round_no: int | None = None) -> Any:
    """A condition for `wait_until`, read straight from Postgres."""
    async def check() -> bool:
        w = (await snapshot(db, workflow_id))["workflow"]
        return bool(w["phase"] == phase and (round_no is None or w["round"] == round_no))
    return check


async def test_bad_input_is_refused_before_anything_is_written(settings: Settings, db: Database) -> None:
    for args in (["x" * 300], ["ok", "--quorum", "most"], ["ok", "--from", "nobody"]):
        refused = await run_cli(settings, "workflow", "start", *args)
        assert refused.returncode == 2 and refused.stderr.startswith("error: "), refused.stderr
    missing = await run_cli(settings, "workflow", "show", "wf-999")
    assert missing.returncode == 1 and "no workflow 'wf-999'" in missing.stderr
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM workflows") == 0
        assert await conn.fetchval("SELECT count(*) FROM messages") == 0


async def test_keyword_fallback_workflow_end_to_end(org_settings: Settings) -> None:
    s = org_settings
    await up(s)
    made = await run_cli(
        s, "workflow", "start", "Move the API database to the new cloud platform",
        "--body", "The budget impact is to be discussed", "--wait", "--timeout", "90", "--json",
        **NO_CLAUDE)
    assert made.returncode == 0, made.stderr
    data = json.loads(made.stdout)
    w = data["workflow"]
    assert w["phase"] == "done" and sorted(w["roles"]) == sorted(ROLES)

    chosen = {p["role"]: p for p in data["participants"]}
    assert set(chosen) == set(ROLES)
    for p in chosen.values():  # no Claude here: every decision was the keyword decider's
        assert p["decider"] == "keyword" and "ClaudeNotInstalled" in p["fallback_reason"]
    assert chosen["cto"]["participate"] and "api" in chosen["cto"]["reason"]
    assert chosen["ceo"]["participate"]  # "budget"
    assert not chosen["chro"]["participate"]

    positions = [m for m in data["messages"] if m["kind"] == "discussion"]
    assert sorted((m["from_role"], m["body"]["round"]) for m in positions) == [
        ("ceo", 1), ("ceo", 2), ("cto", 1), ("cto", 2)]
    for m in positions:
        assert m["body"]["source"] == "fallback" and m["body"]["position"].startswith("[fallback")
    round_two = next(m for m in positions if m["body"]["round"] == 2 and m["from_role"] == "cto")
    assert "ceo" in round_two["body"]["position"]  # it read the others' positions first
    votes = {m["from_role"]: m["body"]["vote"] for m in data["messages"] if m["kind"] == "vote"}
    assert votes == {"ceo": "approve", "cto": "approve"}

    d = data["decision"]
    assert d["outcome"] == "approved" and d["consensus"] == "approved" and d["source"] == "fallback"
    assert {t["role"] for t in d["tasks"]} == {"ceo", "cto"}
    assert [m["channel"] for m in data["messages"] if m["kind"] == "decision"] == [
        f"decisions:{d['id']}"]
    assert {t["status"] for t in data["tasks"]} == {"skipped"}
    for t in data["tasks"]:
        assert t["error"].startswith("skipped: claude unavailable (")
    reported = [m for m in data["messages"] if m["kind"] == "status" and "task" in m["body"]]
    assert {m["body"]["task"]["status"] for m in reported} == {"skipped"} and len(reported) == 2
    actions = [a["action"] for a in data["timeline"]]
    assert actions[0] == "workflow.started" and actions[-1] == "workflow.done"
    assert actions.count("workflow.joined") == 2 and actions.count("workflow.declined") == 1

    workflows = await run_cli(s, "workflow", "list", "--json")
    assert workflows.returncode == 0, workflows.stderr
    assert [(r["id"], r["phase"]) for r in json.loads(workflows.stdout)] == [(w["id"], "done")]
    listed = await run_cli(s, "decisions", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["workflow_id"] for r in json.loads(listed.stdout)] == [w["id"]]
    human = await run_cli(s, "workflow", "show", w["id"].removeprefix("wf-"))
    assert human.returncode == 0 and "skipped" in human.stdout and "keyword" in human.stdout


async def test_participant_killed_mid_workflow_is_restarted_and_the_workflow_completes(
    org_settings: Settings, db: Database
) -> None:
    s = org_settings
    await up(s)
    record = read_org(s)
    assert record is not None
    cto = record.agents["cto"].pid
    assert cto
    # Freeze the CTO so the workflow is certain to be under way, and waiting on it, when
    # it dies. No deadline can move this workflow on (phase timeout 600 s): it completes
    # only if the restarted CTO does its whole part (select, three rounds, vote, report).
    os.kill(cto, signal.SIGSTOP)
    try:
        wf_id = await start(s, "Plan the API platform migration and its budget",
                            "--phase-timeout", "600", "--rounds", "3")

        async def others_chose() -> bool:
            return len((await snapshot(db, wf_id))["participants"]) == 2

        await wait_until(others_chose, timeout=30, interval=0.05)
        assert (await snapshot(db, wf_id))["workflow"]["phase"] == "selecting"
    finally:
        killed_at = datetime.now(UTC)
        os.kill(cto, signal.SIGKILL)
    await wait_until(phase_is(db, wf_id, "done"), timeout=60, interval=0.1)
    data = await snapshot(db, wf_id)
    from_cto = [m for m in data["messages"] if m["from_role"] == "cto"]
    assert [m["body"]["round"] for m in from_cto if m["kind"] == "discussion"] == [1, 2, 3]
    assert all(m["created_at"] > killed_at for m in from_cto)  # all by the new process
    restarted = read_org(s)
    assert restarted is not None and restarted.agents["cto"].restarts == 1


async def test_ceo_down_at_the_deadline_then_back(org_settings: Settings, db: Database) -> None:
    s = org_settings
    await up(s, ["cto", "chro"])  # no CEO: nobody may drive the workflow
    wf_id = await start(s, "Harden the API security", "--phase-timeout", "1", "--rounds", "1")

    async def selected_and_overdue() -> bool:
        data = await snapshot(db, wf_id)
        return len(data["participants"]) == 2 and bool(data["workflow"]["overdue"])

    await wait_until(selected_and_overdue, timeout=30, interval=0.1)
    data = await snapshot(db, wf_id)
    assert data["workflow"]["phase"] == "selecting"  # the deadline passed; the CEO is away
    stopped = await run_cli(s, "down")
    assert stopped.returncode == 0, stopped.stderr
    await up(s, ["ceo", "cto", "chro"])  # the CEO is back: the workflow completes
    await wait_until(phase_is(db, wf_id, "done"), timeout=60, interval=0.1)
    data = await snapshot(db, wf_id)
    assert data["decision"]["decided_by"] == "ceo"
    late = [a for a in data["timeline"] if a["action"] == "workflow.discussing"]
    assert late and late[0]["details"]["late"] is True

async def test_a_role_gone_by_the_executing_deadline_does_not_hold_the_workflow(
    org_settings: Settings, db: Database
) -> None:
    """The CTO joins the workflow, then freezes for good: the deadlines move the
    discussion and the vote on without it, the decision still gives it a task, and
    nobody claims that task. Past the executing deadline, once the CTO's heartbeat is
    stale, the CEO cancels the task and reports it, and the workflow is done."""
    s = org_settings
    await up(s, ["ceo", "cto"])
    record = read_org(s)
    assert record is not None
    ceo, cto = record.agents["ceo"].pid, record.agents["cto"].pid
    assert ceo and cto
    os.kill(ceo, signal.SIGSTOP)  # nothing moves on until the CTO is frozen too
    try:
        wf_id = await start(s, "Plan the API platform migration and its budget",
                            "--phase-timeout", "2", "--rounds", "1")

        async def cto_joined() -> bool:
            data = await snapshot(db, wf_id)
            return any(p["role"] == "cto" and p["participate"] for p in data["participants"])

        await wait_until(cto_joined, timeout=30, interval=0.05)
        os.kill(cto, signal.SIGSTOP)
        os.kill(ceo, signal.SIGCONT)
        await wait_until(phase_is(db, wf_id, "done"), timeout=90, interval=0.2)
    finally:
        os.kill(ceo, signal.SIGCONT)
        os.kill(cto, signal.SIGKILL)
    data = await snapshot(db, wf_id)
    by_role = {t["role"]: t for t in data["tasks"]}
    assert by_role["cto"]["status"] == "cancelled" and by_role["ceo"]["status"] == "skipped"
    reports = {m["body"]["task"]["role"]: m for m in data["messages"]
               if m["kind"] == "status" and "task" in m["body"]}
    assert reports["cto"]["from_role"] == "ceo"
    assert "no cto agent was up" in reports["cto"]["body"]["task"]["note"]


async def test_train_runs_a_scenario_and_checks_it(org_settings: Settings) -> None:
    s = org_settings
    await up(s)
    trained = await run_cli(s, "train", "hiring_plan", timeout=120, **NO_CLAUDE)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    lines = trained.stdout.splitlines()
    assert "✓ the workflow completed" in lines and "✓ chro took part" in lines
    assert "✓ cto stayed out" in lines and not [line for line in lines if line.startswith("✗")]


async def test_train_day2_starts_the_organisation_checks_it_and_stops_it(org_settings: Settings) -> None:
    s = org_settings
    assert read_org(s) is None
    trained = await run_cli(s, "train", "day2", timeout=180, **NO_CLAUDE)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    lines = trained.stdout.splitlines()
    for expected in ("✓ 6 agents started and healthy", "✓ agents stable for 3 s (healthy, no restarts)",
                     "✓ the proposal was stored in Postgres and announced",
                     "✓ the proposal reached all 6 agents", "✓ the workflow completed"):
        assert expected in lines, trained.stdout
    record = read_org(s)
    assert record is not None and record.state == "stopped"  # it stopped what it started
    assert org_tests.org_processes(s) == []
