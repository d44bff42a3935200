"""The command line and `--mcp-config` a role's Claude run is given."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from echo.config import Settings
from echo.mcp import Scope, allowed, mcp_config, stdio_command, write_mcp_config

FENCE = "cto/3/0f1e2d3c"


def test_the_command_is_this_interpreter_without_the_working_directory_on_its_path() -> None:
    assert stdio_command(Scope()) == [sys.executable, "-P", "-m", "echo", "mcp"]
    assert stdio_command(Scope("cto", FENCE))[-4:] == ["--role", "cto", "--fence", FENCE]
    assert allowed("send") == "mcp__echo__send"


def test_the_config_carries_the_organisations_settings_in_a_private_file(tmp_path: Path) -> None:
    s = Settings(env="test", state_dir=tmp_path / "state", namespace="t_launch",
                 database_url="postgresql://echo:sekret@db.example/echo",
                 redis_url="redis://127.0.0.1:6379/3")
    path = write_mcp_config(s, Scope("cto", FENCE), tmp_path / "run" / "mcp.json")
    assert path.stat().st_mode & 0o777 == 0o600
    written = json.loads(path.read_text())
    assert written == mcp_config(s, Scope("cto", FENCE))
    server = written["mcpServers"]["echo"]
    assert [server["command"], *server["args"]] == stdio_command(Scope("cto", FENCE))
    env = server["env"]
    assert (env["ECHO_DATABASE_URL"], env["ECHO_REDIS_URL"], env["ECHO_NAMESPACE"]) == (
        s.database_url, s.redis_url, "t_launch")
    assert Path(env["ECHO_STATE_DIR"]) == s.state_dir and Path(env["ECHO_AGENTS_DIR"]) == s.agents_dir
    assert Settings(**{k.removeprefix("ECHO_").lower(): v for k, v in env.items()}) == s
