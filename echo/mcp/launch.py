"""How a Claude run is given the `echo` server: its command line and `--mcp-config`.

The run's environment is scrubbed (echo.work.claude.claude_env keeps no ECHO_*), so
the server's settings travel in the config: `settings.child_env()`, every ECHO_*
setting of the organisation (database, Redis, namespace, state and agents
directories), so the server reaches exactly the organisation the role's agent is in.
The database URL may hold a password, so the config is a 0600 file passed by path,
never JSON on the command line (argv is world-readable in `ps`).

`-P` keeps the run's working directory off `sys.path`: a task's worktree of a
repository with an `echo/` folder (ECHO's own, say) must not shadow the package.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from echo.config import Settings
from echo.mcp.scope import Scope
from echo.mcp.server import NAME

#: What a run given the server needs in its environment (beside `--mcp-config`): the
#: pinned CLI (2.1.x) connects MCP servers in the background in `-p` mode, so a first
#: turn that calls a tool at once finds "the MCP server 'echo' is still connecting";
#: with this it waits for the connection before the first request.
RUN_ENV = {"MCP_CONNECTION_NONBLOCKING": "0"}


def stdio_command(scope: Scope) -> list[str]:
    """`python -P -m echo mcp [--role R --fence F]`, with this interpreter."""
    argv = [sys.executable, "-P", "-m", "echo", "mcp"]
    if scope.role is not None and scope.fence is not None:
        argv += ["--role", scope.role, "--fence", scope.fence]
    return argv


def mcp_config(settings: Settings, scope: Scope) -> dict[str, Any]:
    """The `--mcp-config` document that gives a run the `echo` server of `scope`."""
    command, *args = stdio_command(scope)
    return {"mcpServers": {NAME: {"type": "stdio", "command": command, "args": args,
                                  "env": settings.child_env()}}}


def write_mcp_config(settings: Settings, scope: Scope, path: Path) -> Path:
    """`mcp_config` in a file only its owner reads (it may hold the database password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(mcp_config(settings, scope), fh)
    path.chmod(0o600)
    return path


def allowed(tool: str) -> str:
    """How a run's `--allowedTools` names the `echo` server's `tool`: mcp__echo__send."""
    return f"mcp__{NAME}__{tool}"
