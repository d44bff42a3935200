"""The workflow's Claude decider with the REAL `claude` CLI: "no Claude here" is
remembered for a while, so a logged-out organisation does not start a CLI for every
question of every workflow only to hear the same refusal. And a role's questions of
one workflow are one session: resumed by a restarted agent (the session is in
Postgres), asked afresh when the CLI cannot resume it; by default one kept CLI
process answers them all (and one that died is replaced by one resuming the session);
fresh processes with the setting off."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from echo.config import Settings
from echo.db import Database
from echo.errors import ClaudeAuthError
from echo.org.agent.answers import keyword_select
from echo.org.agent.deciders import ClaudeDecider, answer
from echo.org.roles import load_roles
from echo.org.workflow import WorkflowStore
from tests.e2e import test_claude_executor as executor_tests
from tests.fakes.anthropic import FakeAnthropic, Request, text
from tests.helpers import claude_children, no_claude_left, wait_until

pytestmark = pytest.mark.e2e

claude_bin = executor_tests.claude_bin
api = executor_tests.api


def decider(settings: Settings, claude_bin: str, api: FakeAnthropic, tmp_path: Path,
            **kw: float) -> ClaudeDecider:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    role = load_roles(settings.agents_dir)["cto"]
    return ClaudeDecider(settings.model_copy(update={"claude_bin": claude_bin}), role,
                         env={**api.env(None), "HOME": str(home)}, **kw)


async def test_not_logged_in_is_remembered_and_asked_again_later(
    settings: Settings, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    remembering = decider(settings, claude_bin, api, tmp_path)
    for _ in range(3):
        with pytest.raises(ClaudeAuthError, match="Not logged in"):
            await remembering.ask("Take part?", time_limit=60)
    assert remembering.runs == 1  # one CLI start for three questions

    forgetful = decider(settings, claude_bin, api, tmp_path, unavailable_for=0.0)
    for _ in range(2):
        with pytest.raises(ClaudeAuthError):
            await forgetful.ask("Take part?", time_limit=60)
    assert forgetful.runs == 2  # past the window, the CLI is asked again


async def test_a_remembered_refusal_still_falls_back_with_its_reason(
    settings: Settings, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    d = decider(settings, claude_bin, api, tmp_path)
    role = load_roles(settings.agents_dir)["cto"]
    for _ in range(2):
        got = await answer(d, "Take part?", 60, lambda data: data,
                           lambda: keyword_select(role, "database migration", ""))
        assert got.source == "fallback" and "Not logged in" in str(got.fallback_reason)
    assert d.runs == 1 and api.message_requests() == []


# ------------------------------------------------------------------ one session per workflow


def session_decider(settings: Settings, claude_bin: str, api: FakeAnthropic, tmp_path: Path,
                    store: WorkflowStore, **kw: object) -> ClaudeDecider:
    """The CTO's decider, logged in, keeping its sessions in `store` (a new one is what a
    restarted agent makes: nothing in memory)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    role = load_roles(settings.agents_dir)["cto"]
    return ClaudeDecider(settings.model_copy(update={"claude_bin": claude_bin, **kw}), role,
                         env={**api.env(), "HOME": str(home)}, conversations=store)


async def a_workflow(store: WorkflowStore) -> str:
    return await store.create(subject="Move the API to the cloud", body="", started_by="ceo",
                              roles=["cto"], rounds=1, quorum="majority", decider_timeout=60,
                              phase_timeout=120)


def route_questions(api: FakeAnthropic) -> None:
    api.route("[echo:select]", text(json.dumps({"participate": True, "reason": "mine"})))
    api.route("[echo:position]", text(json.dumps({"position": "migrate in two steps"})))


async def ready(db: Database, api: FakeAnthropic) -> tuple[WorkflowStore, str]:
    """A workflow to ask questions of, and the fake API's answers to them."""
    store = WorkflowStore(db)
    route_questions(api)
    return store, await a_workflow(store)


def asked(api: FakeAnthropic, marker: str) -> list[Request]:
    """The requests whose new question contains `marker`."""
    return [r for r in api.message_requests() if marker in json.dumps(r.last_user_message)]


def said(request: Request) -> str:
    """All the request carried: the earlier turns of its session too."""
    return json.dumps(request.body.get("messages"))


@pytest.mark.parametrize("mode", ["kept", "resumed"])
async def test_a_restarted_agent_continues_the_workflows_session(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path,
    mode: str,
) -> None:
    store, wf = await ready(db, api)
    first = session_decider(settings, claude_bin, api, tmp_path, store,
                            workflow_conversation=mode)
    assert (await first.ask("[echo:select] Take part?", 60, workflow=wf))["participate"] is True
    await first.close()  # the agent stops (its kept process, if any, ends)
    session = await store.conversation(wf, "cto")
    assert session is not None

    restarted = session_decider(settings, claude_bin, api, tmp_path, store,
                                workflow_conversation=mode)
    got = await restarted.ask("[echo:position] Your position?", 60, workflow=wf)
    await restarted.close()
    assert got == {"position": "migrate in two steps"}
    assert (restarted.runs, restarted.resumed) == (1, 1)
    [later] = asked(api, "[echo:position]")
    # The resumed request carries the earlier question and the role's own answer to it.
    assert "[echo:select] Take part?" in said(later) and later.assistant_turns == 1
    assert '\\"reason\\": \\"mine\\"' in said(later)
    assert await store.conversation(wf, "cto") == session  # the same session went on
    no_claude_left()


@pytest.mark.parametrize("mode", ["kept", "resumed"])
async def test_a_session_that_cannot_be_resumed_is_asked_afresh_and_says_why(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, mode: str,
) -> None:
    store, wf = await ready(db, api)
    d = session_decider(settings, claude_bin, api, tmp_path, store, workflow_conversation=mode)
    await d.ask("[echo:select] Take part?", 60, workflow=wf)
    await d.forget(wf)  # its kept process ended (kept mode)
    gone = await store.conversation(wf, "cto")
    assert gone is not None
    for transcript in (tmp_path / "home" / ".claude" / "projects").rglob(f"{gone}.jsonl"):
        transcript.unlink()  # as on another machine: the CLI has no such conversation

    with caplog.at_level(logging.WARNING, logger="echo.org.agent.deciders"):
        got = await d.ask("[echo:position] Your position?", 60, workflow=wf)
    await d.close()
    assert got == {"position": "migrate in two steps"}
    [line] = [r.getMessage() for r in caplog.records if "cannot resume" in r.getMessage()]
    assert gone in line and "No conversation found" in line and "asking afresh" in line
    assert (d.runs, d.resumed) == (3, 0)  # the refused resume, then the fresh question
    fresh = await store.conversation(wf, "cto")
    assert fresh not in (None, gone)  # the new session is the one the next question resumes
    no_claude_left()


async def test_kept_one_process_answers_every_question_of_the_workflow(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    store, wf = await ready(db, api)
    api.route("[echo:vote]", text(json.dumps({"vote": "approve", "reason": "sound"})))
    d = session_decider(settings, claude_bin, api, tmp_path, store)
    assert d.mode == "kept"  # the default
    await d.ask("[echo:select] Take part?", 60, workflow=wf)
    await d.ask("[echo:position] Your position?", 60, workflow=wf)
    assert (await d.ask("[echo:vote] Your vote?", 60, workflow=wf))["vote"] == "approve"
    assert (d.runs, d.resumed, d.kept) == (1, 2, 1)  # one CLI start for three questions
    [vote] = asked(api, "[echo:vote]")
    assert vote.assistant_turns == 2 and "migrate in two steps" in said(vote)

    # The kept process dies between questions: the next one resumes the session. (The
    # CLI writes an answer to its transcript a moment after printing it; what a kill
    # within that moment loses is still in the thread the next prompt shows.)
    session = await store.conversation(wf, "cto")
    assert session is not None
    projects = tmp_path / "home" / ".claude" / "projects"

    def answered() -> bool:  # the CLI writes its transcript a moment after it answers
        return any("approve" in t.read_text() for t in projects.rglob(f"{session}.jsonl"))

    await wait_until(answered, timeout=30, interval=0.05)
    [child] = claude_children()
    child.kill()
    await wait_until(lambda: d.kept == 0, timeout=30)
    await d.ask("[echo:position] Round 2?", 60, workflow=wf)
    assert (d.runs, d.resumed) == (2, 3)
    later = [r for r in asked(api, "[echo:position]") if "Round 2" in said(r)][-1]
    assert later.assistant_turns == 3 and "[echo:vote] Your vote?" in said(later)

    await d.keep_only(set())  # the workflow is no longer open
    assert d.kept == 0
    no_claude_left()


async def test_with_the_setting_off_every_question_is_a_fresh_process(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    store, wf = await ready(db, api)
    d = session_decider(settings, claude_bin, api, tmp_path, store, workflow_conversation="off")
    await d.ask("[echo:select] Take part?", 60, workflow=wf)
    await d.ask("[echo:position] Your position?", 60, workflow=wf)
    assert (d.runs, d.resumed, d.kept) == (2, 0, 0)
    assert all(r.assistant_turns == 0 for r in api.message_requests())
    assert await store.conversation(wf, "cto") is None

