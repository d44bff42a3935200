"""One session per role per workflow across an agent's restart (issue 21 item 5), with
the REAL `claude` CLI against the fake API and the workflow agents in this process:
the CTO's agent is stopped after its self-selection (its kept CLI process ends with
it) and a new one, with nothing in memory, takes its place; the workflow still
decides, and the new agent's questions continue the CTO's session (their requests
carry its earlier turns). The CHRO's agent starts late, so the workflow waits in
`selecting` across the restart."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from echo.config import Settings
from echo.db import Database
from echo.org.agent.deciders import ClaudeDecider
from echo.org.roles import load_roles
from echo.org.workflow import Phase, WorkflowAgent, WorkflowStore
from tests.e2e import test_claude_executor as executor_tests
from tests.e2e.test_deciders_claude import asked, said
from tests.e2e.test_workflow_traces import route_workflow
from tests.fakes.anthropic import FakeAnthropic, text
from tests.helpers import no_claude_left, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

claude_bin = executor_tests.claude_bin
api = executor_tests.api
ROLES = ("ceo", "cto", "chro")


async def test_an_agent_restarted_mid_workflow_continues_its_session(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    s = settings.model_copy(update={"claude_bin": claude_bin})
    home = tmp_path / "home"
    home.mkdir()
    env = {**api.env(), "HOME": str(home)}
    api.route("[echo:decide]", text(json.dumps({"outcome": "approved", "summary": "migrate",
                                                "tasks": []})))  # first match: no task to run
    route_workflow(api)
    roles, store = load_roles(s.agents_dir), WorkflowStore(db)

    def agent(role: str) -> WorkflowAgent:
        return WorkflowAgent(s, db, roles[role], tick=0.05, decider=ClaudeDecider(
            s, roles[role], env=env, conversations=store))

    async def has_selected(wf: str, role: str) -> bool:
        return role in {p.role for p in await store.participants(wf)}

    async with anyio.create_task_group() as tg:
        await tg.start(agent("ceo").run)
        wf = await store.create(subject="Move the API to the cloud", body="", started_by="ceo",
                                roles=list(ROLES), rounds=1, quorum="majority",
                                decider_timeout=60, phase_timeout=600)
        first = agent("cto")
        async with anyio.create_task_group() as first_cto:
            await first_cto.start(first.run)
            await wait_until(lambda: has_selected(wf, "cto"), timeout=60, interval=0.05)
            first_cto.cancel_scope.cancel()  # the agent stops
        assert first.decider is not None and first.decider.kept == 0  # its CLI ended with it
        session = await store.conversation(wf, "cto")
        assert session is not None
        got = await store.get(wf)
        assert got is not None and got.phase == Phase.SELECTING  # the CHRO has not answered

        restarted = agent("cto")
        await tg.start(restarted.run)
        await tg.start(agent("chro").run)

        async def done() -> bool:
            row = await store.get(wf)
            return row is not None and row.phase.final

        await wait_until(done, timeout=180, interval=0.05)
        tg.cancel_scope.cancel()

    got = await store.get(wf)
    decision = await store.decision_of(wf)
    assert got is not None and got.phase == Phase.DONE
    assert decision is not None and decision.outcome == "approved" and decision.source == "llm"
    assert restarted.decider is not None and restarted.decider.resumed == 2  # position, vote
    assert await store.conversation(wf, "cto") == session
    [position] = asked(api, "You are the Chief Technology Officer, discussing")
    [vote] = asked(api, "[echo:vote]\\nYou are the Chief Technology Officer")
    assert position.assistant_turns == 1 and "[echo:select]" in said(position)
    assert vote.assistant_turns == 2 and "migrate in two steps" in said(vote)
    no_claude_left()
