"""What a role's Claude runs are given to reach the organisation (echo/org/agent/reach.py):
the `echo` MCP server as the role, under its lease, with the role's tools only."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from echo.config import Settings
from echo.org.agent import reach
from echo.org.agent.tree import RoleAgent, role_executors
from echo.org.leases import Lease
from echo.org.roles import load_role
from echo.work import ClaudeExecutor
from tests.unit.work.test_claude_unit import _task


def test_the_config_file_runs_the_server_as_the_role_under_its_fence(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path / "state", database_url="postgresql://u:secret@h/db")
    path = reach.write_config(s, Lease.parse("cto/7/vm:123:abc"))
    server = json.loads(path.read_text())["mcpServers"]["echo"]
    assert [server["command"], *server["args"]] == [
        sys.executable, "-P", "-m", "echo", "mcp", "--role", "cto", "--fence", "cto/7/vm:123:abc"]
    assert server["env"]["ECHO_DATABASE_URL"] == "postgresql://u:secret@h/db"
    assert server["env"]["ECHO_STATE_DIR"] == str(tmp_path / "state")
    # it holds the DSN's password: the user's alone, and never on a command line
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.name == "cto-7.json"
    (path.parent / "ceo-3.json").write_text("{}")  # another role's: kept
    again = reach.write_config(s, Lease.parse("cto/8/vm:124:def"))  # a new lease: the old file goes
    assert "cto/8/vm:124:def" in again.read_text()
    assert sorted(p.name for p in path.parent.iterdir()) == ["ceo-3.json", "cto-8.json"]
    reach.remove_config(again)  # the agent stopped: no secret left in the state directory
    assert sorted(p.name for p in path.parent.iterdir()) == ["ceo-3.json"]


def test_a_run_gets_only_this_server_and_the_roles_echo_tools(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path)
    role = load_role(s.agents_dir, "cto")
    config = reach.write_config(s, Lease.parse("cto/1/h"))
    claude = role_executors(s, role, mcp_config=config)["claude"]
    assert isinstance(claude, ClaudeExecutor)
    argv = claude.argv("claude", claude.options_for(_task()))
    assert argv[argv.index("--mcp-config") + 1] == str(config)
    assert "--strict-mcp-config" in argv  # none of the user's own MCP servers
    assert argv[argv.index("--allowedTools") + 1] == "Read,Grep,Glob,Bash(git log:*),mcp__echo"
    # in a workspace the tools are the workspace's, and the organisation's still
    ws = claude.argv("claude", claude.options_for(_task(workspace=str(tmp_path))))
    assert ws[ws.index("--allowedTools") + 1].endswith(",mcp__echo") and "--mcp-config" in ws

    narrow = role.model_copy(update={"claude": role.claude.model_copy(
        update={"echo_tools": ["send", "thread"]})})
    claude = role_executors(s, narrow, mcp_config=config)["claude"]
    assert isinstance(claude, ClaudeExecutor)
    argv = claude.argv("claude", claude.options_for(_task()))
    assert argv[argv.index("--allowedTools") + 1].endswith(",mcp__echo__send,mcp__echo__thread")

    bare = role_executors(s, role)["claude"]  # no lease to act under: no server
    assert isinstance(bare, ClaudeExecutor)
    assert "--mcp-config" not in bare.argv("claude", bare.options_for(_task()))


def test_an_answers_run_gets_no_echo_server_so_roles_never_ask_each_other_on(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path)
    agent = RoleAgent(s, load_role(s.agents_dir, "cto"), fence="cto/1/h")
    agent.database = cast(Any, SimpleNamespace(settings=s))  # no statement is run here
    agent.mcp_config = reach.write_config(s, Lease.parse("cto/1/h"))
    assert agent._new_workflow().decider is not None
    assert agent._new_workflow().decider.options.mcp_config == str(agent.mcp_config)
    answerer = agent._new_answerer()
    assert answerer.decider is not None and answerer.decider.options.mcp_config is None
