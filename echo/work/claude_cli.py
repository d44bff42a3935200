"""The Claude CLI itself: where its binary is, the environment it runs in, its credentials.

The executor (`echo.work.claude`) runs what `resolve_claude_bin` finds, in the
environment `claude_env` makes: what the CLI needs (PATH, HOME, locale, proxies,
ANTHROPIC_*, CLAUDE_CODE_*, DISABLE_*, the cloud providers' variables when one is
chosen) and nothing else; never CLAUDECODE, the database URL or unrelated secrets.
`login_hint` says where the CLI would find credentials, without calling the API.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from echo.errors import ClaudeNotInstalled
from echo.paths import project_path
from echo.slices import ClaudeSettings
from echo.work.process import scrubbed_env

#: The project-local CLI that `make setup` installs from tools/claude/package.json.
LOCAL_CLAUDE = project_path("tools") / "claude" / "node_modules" / ".bin" / "claude"
_ENV_PREFIXES = ("ANTHROPIC_", "CLAUDE_CODE_", "CLAUDE_CONFIG_DIR", "DISABLE_",
                 "MAX_THINKING_TOKENS", "MCP_TIMEOUT", "MCP_TOOL_TIMEOUT",
                 "MCP_CONNECT_TIMEOUT_MS", "BASH_")
_CLOUD_PREFIXES = ("AWS_", "CLOUD_ML_", "GOOGLE_", "VERTEX_", "ANTHROPIC_VERTEX_")
#: For a run given MCP servers (`--mcp-config`): the pinned CLI (2.1.x) connects them in
#: the background in `-p` mode, so a first turn that calls an `echo` tool before the
#: server is up is told "the MCP server 'echo' is still connecting" and the call is lost
#: (a race: seen with a direct `claude -p`); with this the CLI waits for its servers
#: before the first request. It waits `MCP_CONNECT_TIMEOUT_MS` at most (5,000 by
#: default), then proceeds without them ("not ready after 5000ms — proceeding"): on a
#: loaded machine the `echo` server's Python start alone passed that (CI, 2026-12-02),
#: so the wait is as long as the CLI's own server start-up timeout (MCP_TIMEOUT, 30 s).
MCP_WAIT = {"MCP_CONNECTION_NONBLOCKING": "0", "MCP_CONNECT_TIMEOUT_MS": "30000"}


def mcp_waits(argv: Sequence[str], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a run's environment adds for its argv: `MCP_WAIT` when it has MCP servers
    (a wait the user set in `env` is kept)."""
    if "--mcp-config" not in argv:
        return {}
    return {k: v for k, v in MCP_WAIT.items() if k not in (env or {})}


def resolve_claude_bin(settings: ClaudeSettings, *, local: Path | None = LOCAL_CLAUDE) -> str:
    """`settings.claude_bin` (ECHO_CLAUDE_BIN) if it is a path or on PATH, else the
    project-local CLI; otherwise one clear `ClaudeNotInstalled`."""
    wanted = settings.claude_bin
    if os.sep in wanted:
        if os.access(wanted, os.X_OK) and Path(wanted).is_file():
            return wanted
    else:
        found = shutil.which(wanted)
        if found:
            return found
        if local is not None and os.access(local, os.X_OK):
            return str(local)
    raise ClaudeNotInstalled(
        f"the Claude CLI {wanted!r} was not found; install it with "
        "`npm install -g @anthropic-ai/claude-code` (or `make setup` for the project-local "
        "copy) or point ECHO_CLAUDE_BIN at the `claude` binary"
    )


def claude_env(extra: Mapping[str, str] | None = None,
               source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: what the CLI needs and nothing else."""
    source = os.environ if source is None else source
    prefixes: tuple[str, ...] = _ENV_PREFIXES
    if source.get("CLAUDE_CODE_USE_BEDROCK") or source.get("CLAUDE_CODE_USE_VERTEX"):
        prefixes += _CLOUD_PREFIXES
    env = scrubbed_env(extra, prefixes=prefixes, source=source)
    env.pop("CLAUDECODE", None)
    return env


def login_hint(env: Mapping[str, str] | None = None) -> str | None:
    """Where the CLI would find credentials, without calling the API; None if nowhere.

    Used to say up front which mode a run is in. It is a hint: only a real run can
    tell that a key is valid, and every run classifies that failure on its own.
    """
    env = os.environ if env is None else env
    if env.get("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_AUTH_TOKEN"):
        return "ANTHROPIC_API_KEY"
    if env.get("CLAUDE_CODE_USE_BEDROCK") or env.get("CLAUDE_CODE_USE_VERTEX"):
        return "cloud provider (Bedrock/Vertex)"
    config = Path(env.get("CLAUDE_CONFIG_DIR") or Path(env.get("HOME", "~")).expanduser() / ".claude")
    if (config / ".credentials.json").is_file():
        return f"login in {config}"
    return None
