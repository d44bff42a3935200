"""A real organisation (`echoctl up`, the REAL `claude` CLI in every agent against the
fake API): the CTO's task run consults the senior architect through the `echo` MCP
server its agent gave it (`mcp__echo__ask`), the architect's agent answers with its
own Claude, and the answer comes back to the CTO's run as the tool's result. Every
piece is the one a user runs: the agent's lease and fence, its `--mcp-config`, the
role-scoped server, the participant's kick and the architect's Answerer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from echo.bus import Kind
from echo.config import Settings
from echo.db import Database
from echo.org.client import Client
from tests import helpers as org_tests
from tests.e2e import test_claude_executor as executor_tests
from tests.e2e.test_workflow_claude import answer
from tests.fakes.anthropic import FakeAnthropic, text, tool_use
from tests.helpers import run_cli, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

claude_bin = executor_tests.claude_bin
api = executor_tests.api

ROLES = ["cto", "senior_architect"]
ADVICE = "Use Postgres with SKIP LOCKED; no new broker."


async def test_a_cto_run_asks_the_architect_and_gets_its_claude_answer(
    org_settings: Settings, db: Database, api: FakeAnthropic, claude_bin: str, tmp_path: Path
) -> None:
    s = org_settings
    api.route("[echo:answer]", answer({"answer": ADVICE}))  # the architect's question run
    api.conversation(tool_use("mcp__echo__ask", {
        "role": "senior_architect", "question": "Which queue should the billing job use?",
        "timeout": 90}), text("Planned with the architect's advice."))
    home = tmp_path / "home"
    home.mkdir()
    env = {**api.env(), "HOME": str(home), "ECHO_CLAUDE_BIN": claude_bin}
    started = await run_cli(s, "up", "--roles", ",".join(ROLES), "--detach", timeout=120, **env)
    assert started.returncode == 0, started.stderr
    await wait_until(org_tests.all_in(s, "healthy", ROLES), timeout=60, interval=0.1)

    async with Client(s) as client:
        submitted = await client.submit_task("Plan the billing job's queue", role="cto")
        await wait_until(lambda: finished(client, submitted.task_id), timeout=180, interval=0.2)
        detail = await client.task(submitted.task_id)
        assert detail.task["status"] == "completed", detail.task["error"]
        said = await client.messages(role="cto", limit=50)
    [asked] = [m for m in said if m.kind == Kind.QUESTION]
    [reply] = [m for m in said if m.kind == Kind.ANSWER]
    assert (asked.from_role, asked.to_role) == ("cto", "senior_architect")  # as the role
    assert (reply.from_role, reply.to_role, reply.thread_id) == ("senior_architect", "cto",
                                                                asked.thread_id)
    assert reply.body["text"] == ADVICE and reply.body["source"] == "llm"
    # the architect's answer is what the CTO's run got back from the tool
    results = [c for r in api.session_requests() for m in r.body["messages"]
               if m["role"] == "user" and isinstance(m["content"], list)
               for c in m["content"] if isinstance(c, dict) and c.get("type") == "tool_result"]
    assert results and ADVICE in json.dumps(results[-1]) and '"is_error": true' not in json.dumps(results[-1])


async def finished(client: Client, task_id: int) -> bool:
    return (await client.task(task_id)).task["status"] in ("completed", "failed", "dead")
