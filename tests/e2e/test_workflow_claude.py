"""The workflow with the REAL `claude` CLI in every agent process, against the fake
Anthropic API answering each workflow prompt (`[echo:<step>]`) with scripted JSON:
LLM self-selection, positions, votes and the CEO's decision, and the task it
assigns run by the CTO's pool. Also: a decider that does not answer in time falls
back to keywords, and says so. Each role's questions of the workflow are one session:
its later requests carry its earlier questions and answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from echo.config import Settings
from echo.db import Database
from echo.org.workflow import WorkflowStore
from tests import helpers as org_tests
from tests.e2e import test_claude_executor as executor_tests
from tests.fakes.anthropic import HANG, FakeAnthropic, Request, text
from tests.helpers import run_cli, wait_until

pytestmark = pytest.mark.e2e

claude_bin = executor_tests.claude_bin
api = executor_tests.api

ROLES = ["ceo", "cto", "chro"]


def answer(data: object) -> object:
    return text(json.dumps(data))


def asked(api: FakeAnthropic, *markers: str) -> list[Request]:
    """The requests whose new question contains every marker."""
    return [r for r in api.message_requests()
            if all(m in json.dumps(r.last_user_message) for m in markers)]


def said(request: Request) -> str:
    """Everything the request carried: the earlier turns of its session too."""
    return json.dumps(request.body.get("messages"))


async def up_with_claude(s: Settings, api: FakeAnthropic, claude_bin: str, tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {**api.env(), "HOME": str(home), "ECHO_CLAUDE_BIN": claude_bin}
    started = await run_cli(s, "up", "--roles", ",".join(ROLES), "--detach", timeout=120, **env)
    assert started.returncode == 0, started.stderr
    await wait_until(org_tests.all_in(s, "healthy", ROLES), timeout=60, interval=0.1)
    return env


async def test_llm_workflow_end_to_end(
    org_settings: Settings, db: Database, api: FakeAnthropic, claude_bin: str, tmp_path: Path
) -> None:
    s = org_settings
    api.route("You are the Chief Human Resources Officer", answer(
        {"participate": False, "confidence": 0.8, "reason": "no people impact"}))
    api.route("[echo:select]", answer({"participate": True, "confidence": 0.9, "reason": "LLM: mine"}))
    api.route("[echo:position]", answer({"position": "LLM: migrate in two steps"}))
    # The CTO disagrees: one approve, one reject is no majority, so the CEO decides.
    api.route("You are the Chief Technology Officer. The discussion", answer(
        {"vote": "reject", "reason": "LLM: too risky this quarter"}))
    api.route("[echo:vote]", answer({"vote": "approve", "reason": "LLM: the plan is sound"}))
    api.route("[echo:decide]", answer({
        "outcome": "approved", "summary": "LLM: migrate, CTO owns it",
        "tasks": [{"role": "cto", "description": "Write the migration plan"},
                  {"role": "nobody", "description": "dropped: not a role"}]}))
    api.script(text("Migration plan written"))  # the task run itself
    env = await up_with_claude(s, api, claude_bin, tmp_path)

    made = await run_cli(s, "workflow", "start", "Quarterly planning", "--rounds", "1",
                         "--wait", "--timeout", "120", "--json", **env)
    assert made.returncode == 0, made.stderr
    data = json.loads(made.stdout)
    assert data["workflow"]["phase"] == "done"
    chosen = {p["role"]: (p["participate"], p["decider"]) for p in data["participants"]}
    assert chosen == {"ceo": (True, "llm"), "cto": (True, "llm"), "chro": (False, "llm")}
    positions = [m for m in data["messages"] if m["kind"] == "discussion"]
    assert {m["from_role"] for m in positions} == {"ceo", "cto"}
    assert all(m["body"] == {"workflow": data["workflow"]["id"], "round": 1, "source": "llm",
                             "position": "LLM: migrate in two steps", "fallback_reason": None}
               for m in positions)
    votes = {m["from_role"]: m["body"]["vote"] for m in data["messages"] if m["kind"] == "vote"}
    assert votes == {"ceo": "approve", "cto": "reject"}
    d = data["decision"]
    assert data["workflow"]["consensus"] == "escalated" and d["consensus"] == "escalated"
    assert d["source"] == "llm" and d["summary"] == "LLM: migrate, CTO owns it"
    assert [(t["role"], t["description"]) for t in d["tasks"]] == [("cto", "Write the migration plan")]
    [task] = data["tasks"]
    assert task["status"] == "completed" and task["result"] == "Migration plan written"
    [report] = [m for m in data["messages"] if m["kind"] == "status" and "task" in m["body"]]
    assert report["from_role"] == "cto" and report["body"]["task"]["status"] == "completed"
    prompts = [json.dumps(r.last_user_message) for r in api.message_requests()]
    assert any("[echo:decide]" in p and "LLM: migrate in two steps" in p and "too risky" in p
               and "escalated" in p for p in prompts)
    # One session per role: each later question resumed the role's session, so its
    # request carries the role's earlier questions and its own answers to them.
    for title in ("Chief Executive Officer", "Chief Technology Officer"):
        [vote] = asked(api, "[echo:vote]", f"You are the {title}")
        assert vote.assistant_turns == 2  # its self-selection and its position
        assert "[echo:select]" in said(vote) and "[echo:position]" in said(vote)
        assert "LLM: mine" in said(vote) and "LLM: migrate in two steps" in said(vote)
    [decide] = asked(api, "[echo:decide]")
    assert decide.assistant_turns == 3 and "LLM: the plan is sound" in said(decide)
    async with db.acquire() as conn:
        sessions = await conn.fetch("SELECT role, session_id FROM workflow_sessions "
                                    "WHERE workflow_id = $1", data["workflow"]["id"])
    assert {r["role"] for r in sessions} == set(ROLES) and len({r["session_id"] for r in sessions}) == 3


async def test_decider_timeout_falls_back_to_keywords(
    org_settings: Settings, db: Database, api: FakeAnthropic, claude_bin: str, tmp_path: Path
) -> None:
    s = org_settings
    api.route("[echo:select]", HANG)
    env = await up_with_claude(s, api, claude_bin, tmp_path)
    made = await run_cli(s, "workflow", "start", "Move the API to the cloud platform",
                         "--decider-timeout", "2", "--json", **env)
    assert made.returncode == 0, made.stderr
    wf_id = json.loads(made.stdout)["workflow"]["id"]

    async def all_decided() -> bool:
        return len(await WorkflowStore(db).participants(wf_id)) == len(ROLES)

    await wait_until(all_decided, timeout=60, interval=0.1)
    chosen = {p.role: p.model_dump() for p in (await WorkflowStore(db).participants(wf_id))}
    for p in chosen.values():
        assert p["decider"] == "keyword" and "ClaudeTimeout" in p["fallback_reason"]
    assert chosen["cto"]["participate"] and not chosen["chro"]["participate"]
