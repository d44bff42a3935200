"""How a role's Claude runs reach the organisation: the `echo` MCP server, as the role.

Every Claude run ECHO starts for a role (its tasks, its workflow questions, its
answers to `ask`) is given one MCP server, `echo` (echo/mcp/), started by the CLI
itself over stdio as `python -m echo mcp --role ROLE --fence ROLE/EPOCH/HOLDER`:

- **as the role**: what the run sends is sent by the role, and the server has no
  tool to act as another role, to decide an approval or to raise a budget;
- **fenced like the role**: the server's database connections carry the role's
  lease (`echo.fence`, echo/org/leases.py), so once that lease has passed on (the
  agent was partitioned, paused, replaced) every write the run attempts through it
  is refused, exactly like the agent's own;
- **only the tools the role allows**: `[claude] echo_tools` in role.toml (default:
  all of the role-scoped server's; `[]` gives the runs no `echo` server at all),
  allowed in the run as `mcp__echo__<tool>` permission rules.

The server's configuration is a file rather than a command-line argument, because it
carries the settings that reach the database, the DSN's password among them, and a
command line is visible to every user of the machine (`ps`). The file lives only as
long as the lease it names: `$ECHO_STATE_DIR/mcp/<role>-<epoch>.json` (0600 in a 0700
folder), written when the agent takes the role (older epochs' files of the role, left
by a killed agent, removed then), and removed when the agent stops, so a stopped
organisation leaves no secret in its state directory. (A run's own tools run as the
same OS user, who can read what the agent can: isolating the runs from the user's
files takes a separate OS user, which ECHO does not set up.)
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from echo.config import Settings
from echo.org.leases import Lease
from echo.org.roles import Role

#: The server's name in a run: its tools are `mcp__echo__<tool>`.
SERVER = "echo"


def server_argv(role: str, fence: str) -> list[str]:
    """The command that serves the organisation to one run, as `role` under `fence`.
    `-P` keeps the run's working directory off `sys.path`: a task's worktree of a
    repository with an `echo/` folder (ECHO's own) must not shadow the package."""
    return [sys.executable, "-P", "-m", "echo", "mcp", "--role", role, "--fence", fence]


def allowed_rules(tools: Sequence[str] | None) -> tuple[str, ...]:
    """The permission rules that let a run call the `echo` tools (None: all of them)."""
    if tools is None:
        return (f"mcp__{SERVER}",)
    return tuple(f"mcp__{SERVER}__{t}" for t in tools)


def write_config(settings: Settings, lease: Lease) -> Path:
    """The `--mcp-config` file for the runs of the role that `lease` holds (written
    atomically: a run never reads half of one); the files of its older leases go."""
    folder = settings.state_dir / "mcp"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    role, epoch = lease.role, lease.epoch
    for old in folder.glob(f"{role}-*.json"):
        held = old.stem.removeprefix(f"{role}-")
        if held.isdigit() and int(held) < epoch:
            old.unlink(missing_ok=True)
    path = folder / f"{role}-{epoch}.json"
    argv = server_argv(role, lease.fence)
    config = {"mcpServers": {SERVER: {"type": "stdio", "command": argv[0], "args": argv[1:],
                                      "env": settings.child_env()}}}
    partial = folder / f".{role}.json.{os.getpid()}"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    os.replace(partial, path)
    return path


def remove_config(path: Path | None) -> None:
    """The agent stopped: its runs are gone, and so is the file they were started with."""
    if path is not None:
        path.unlink(missing_ok=True)


def run_options(role: Role, mcp_config: Path | None) -> dict[str, Any]:
    """The `ClaudeRunOptions` fields that give a run of `role` its `echo` MCP server."""
    if mcp_config is None:
        return {}
    return {"mcp_config": str(mcp_config), "mcp_tools": allowed_rules(role.claude.echo_tools)}
