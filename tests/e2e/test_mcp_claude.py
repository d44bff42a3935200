"""A role's Claude task run reaches the organisation through the `echo` MCP server,
with the REAL `claude` CLI as the MCP client and the fake API scripting the turn that
calls `mcp__echo__send`: the run is given the server as ECHO gives it to every run
of the role (echo/org/agent/reach.py: the 0600 `--mcp-config` file with the role's fence
and the organisation's settings, `--strict-mcp-config`, the role's `echo` tools).
The message is in the store, from cto to ceo; once the role's lease has passed on, the
same run writes nothing and its model is told why in one line."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from echo import db as dbmod
from echo.config import Settings
from echo.db import Database
from echo.org.agent import reach
from echo.org.agent.lease_keeper import LeaseKeeper
from echo.org.client import Client
from echo.org.leases import Lease
from echo.org.roles import load_role
from echo.work import ClaudeRunOptions, TaskQueue
from tests.e2e import test_claude_executor as executor_tests
from tests.e2e.test_claude_runs import run_task
from tests.fakes.anthropic import FakeAnthropic, text, tool_use

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

claude_bin = executor_tests.claude_bin
api = executor_tests.api
SEND = {"to": "ceo", "subject": "API plan", "body": "ready for review"}


@pytest.fixture
async def cto_lease(settings: Settings) -> AsyncIterator[Lease]:
    """The cto's lease, as its agent holds it (for two minutes: nothing renews it here)."""
    keeper = LeaseKeeper(settings.leases.model_copy(update={"lease_seconds": 120.0}),
                         settings.database, "cto")
    await keeper.open()
    try:
        lease = await keeper.try_acquire()
        assert lease is not None
        yield lease
    finally:
        await keeper.close()


def slow_start(config: Path, tmp_path: Path, seconds: int) -> None:
    """Make the configured server take `seconds` longer to start (a loaded machine's
    import time): the run must wait for it, not find it "still connecting"."""
    wrapper = tmp_path / "slow-start"
    wrapper.write_text(f'#!/bin/sh\nsleep {seconds}\nexec "$@"\n')
    wrapper.chmod(0o700)
    data = json.loads(config.read_text())
    server = data["mcpServers"][reach.SERVER]
    server["command"], server["args"] = str(wrapper), [server["command"], *server["args"]]
    config.write_text(json.dumps(data))


async def cto_task(settings: Settings, db: Database, lease: Lease, claude_bin: str,
                   api: FakeAnthropic, tmp_path: Path, *, slow: int = 0) -> str:
    """Run one cto task whose first turn sends to the CEO; the tool result the model got."""
    config = reach.write_config(settings, lease)
    if slow:
        slow_start(config, tmp_path, slow)
    options = ClaudeRunOptions(model="sonnet", **reach.run_options(load_role(settings.agents_dir, "cto"),
                                                                   config))
    api.conversation(tool_use(f"mcp__{reach.SERVER}__send", SEND), text("Done."))
    executor = executor_tests.make_executor(settings, claude_bin, api, tmp_path, options=options)
    task_id = await run_task(settings, db, executor, role="cto")
    row = await TaskQueue(db).get(task_id)
    assert row["status"] == "completed", row["error"]
    [result] = [c for m in api.session_requests()[-1].body["messages"] if m["role"] == "user"
                for c in m["content"] if isinstance(c, dict) and c.get("type") == "tool_result"]
    return json.dumps(result)


async def test_a_cto_task_run_sends_through_mcp_as_cto(
    settings: Settings, db: Database, cto_lease: Lease, claude_bin: str, api: FakeAnthropic,
    tmp_path: Path
) -> None:
    # 6 s: past the CLI's default wait for its servers (MCP_CONNECT_TIMEOUT_MS, 5 s), after
    # which it runs without them; a loaded machine's server start passed it (CI, 2026-12-02)
    result = await cto_task(settings, db, cto_lease, claude_bin, api, tmp_path, slow=6)
    assert '"is_error": true' not in result, result  # the tool was there
    async with Client(settings) as client:
        [sent] = await client.messages(role="ceo")
    assert (sent.from_role, sent.to_role, sent.kind, sent.subject) == ("cto", "ceo", "direct", "API plan")
    assert f'\\"db_id\\": {sent.id}' in result and '"is_error": true' not in result


async def test_a_run_whose_role_was_taken_over_writes_nothing_through_mcp(
    settings: Settings, db: Database, cto_lease: Lease, claude_bin: str, api: FakeAnthropic,
    tmp_path: Path
) -> None:
    async with dbmod.connection(settings.database) as conn:  # another agent takes the role: epoch + 1
        await conn.execute("UPDATE role_leases SET expires_at = now() WHERE role = 'cto'")
    newer = LeaseKeeper(settings.leases, settings.database, "cto")
    await newer.open()
    try:
        assert await newer.try_acquire() is not None
        result = await cto_task(settings, db, cto_lease, claude_bin, api, tmp_path)
    finally:
        await newer.close()
    assert '"is_error": true' in result and "no longer held by this agent" in result
    async with Client(settings) as client:
        assert await client.messages() == []
