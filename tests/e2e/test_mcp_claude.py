"""The REAL `claude` CLI as the `echo` server's MCP client, started the way ECHO will
start a role's run: `--mcp-config` is the 0600 file `echo.mcp.write_mcp_config` writes
(the server's command line and the organisation's ECHO_* settings, which the run's
scrubbed environment lacks), the tool allowed as `mcp__echo__send`, `RUN_ENV` in the
environment. The fake API scripts the turn that calls the tool: the message is in the
store, from the role; once the role's lease passed on, the same run writes nothing."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from echo import db as dbmod
from echo.config import Settings
from echo.mcp import RUN_ENV, Scope, allowed, write_mcp_config
from echo.org.client import Client
from echo.org.leases import Lease, LeaseKeeper
from echo.work.claude import claude_env
from tests.e2e import test_claude_executor as executor_tests
from tests.fakes.anthropic import FakeAnthropic, text, tool_use

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

claude_bin = executor_tests.claude_bin
api = executor_tests.api
SEND = {"to": "ceo", "subject": "API plan", "body": "ready for review"}


@pytest.fixture
async def cto_lease(settings: Settings) -> AsyncIterator[Lease]:
    keeper = LeaseKeeper(settings.model_copy(update={"lease_seconds": 120.0}), "cto")
    await keeper.open()
    try:
        lease = await keeper.try_acquire()
        assert lease is not None
        yield lease
    finally:
        await keeper.close()


async def run_as(settings: Settings, lease: Lease, claude_bin: str, api: FakeAnthropic,
                 tmp_path: Path) -> str:
    """One `claude -p` run given the cto's server; the tool result its model was sent."""
    config = write_mcp_config(settings, Scope("cto", lease.fence), tmp_path / "mcp.json")
    assert config.stat().st_mode & 0o777 == 0o600
    api.conversation(tool_use(allowed("send"), SEND), text("Done."))
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = claude_env({**api.env("sk-ant-test-0123456789"), **RUN_ENV, "HOME": str(home),
                      "CLAUDE_CONFIG_DIR": str(tmp_path / "claude-config")})
    assert not any(k.startswith("ECHO_") for k in env)  # the config carries them
    done = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [claude_bin, "-p", "Tell the CEO the API plan is ready", "--output-format", "json",
         "--mcp-config", str(config), "--strict-mcp-config", "--allowedTools", allowed("send")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False,
        stdin=subprocess.DEVNULL))
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert json.loads(done.stdout)["result"] == "Done."
    [result] = [c for m in api.session_requests()[-1].body["messages"] if m["role"] == "user"
                for c in m["content"] if isinstance(c, dict) and c.get("type") == "tool_result"]
    return json.dumps(result)


async def test_a_cto_run_sends_through_mcp_as_cto(
    settings: Settings, cto_lease: Lease, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    result = await run_as(settings, cto_lease, claude_bin, api, tmp_path)
    async with Client(settings) as client:
        [sent] = await client.messages(role="ceo")
    assert (sent.from_role, sent.to_role, sent.kind, sent.subject) == ("cto", "ceo", "direct", "API plan")
    assert f'\\"db_id\\": {sent.id}' in result and '"is_error": true' not in result


async def test_a_run_whose_role_was_taken_over_writes_nothing_through_mcp(
    settings: Settings, cto_lease: Lease, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    async with dbmod.connection(settings) as conn:  # another agent takes the role: epoch + 1
        await conn.execute("UPDATE role_leases SET expires_at = now() WHERE role = 'cto'")
    newer = LeaseKeeper(settings, "cto")
    await newer.open()
    try:
        assert await newer.try_acquire() is not None
        result = await run_as(settings, cto_lease, claude_bin, api, tmp_path)
    finally:
        await newer.close()
    assert '"is_error": true' in result and "no longer held by this agent" in result
    async with Client(settings) as client:
        assert await client.messages() == []
