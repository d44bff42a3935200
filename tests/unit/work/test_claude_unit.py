"""The Claude executor's pure parts: argv, environment, classification, reset times."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from echo.config import Settings
from echo.errors import (
    ClaudeApiError,
    ClaudeAuthError,
    ClaudeCrashed,
    ClaudeCreditError,
    ClaudeTimeout,
    ClaudeUsageLimit,
    EchoError,
)
from echo.work import ClaudeExecutor, ClaudeRunOptions, NewTask, Task
from echo.work.claude_cli import MCP_WAIT, claude_env, mcp_waits
from echo.work.claude_outcome import classify, redact
from echo.work.limits import usage_limit_reset
from echo.work.process import ProcessResult
from echo.work.queue import DEFAULT_BACKOFF


def _out(rc: int = 1, **fields: object) -> ProcessResult:
    data = {"type": "result", "subtype": "success", "is_error": rc != 0,
            "api_error_status": None, "result": "ok", "session_id": "s", "total_cost_usd": 0.5}
    data.update(fields)
    return ProcessResult(rc, json.dumps(data).encode() + b"\n", b"", 0.1, False)


def _task(**payload: object) -> Task:
    return Task(1, "claude", "d", 0, "cto", "h:1:0", 1, 30, 3, 0, dict(payload),
                datetime.now(UTC))


def test_success_returns_result_cost_and_session() -> None:
    result = classify(_out(0), timeout=5, env={})
    assert (result.cost_usd, result.session_id, result.output["result"]) == (0.5, "s", "ok")


@pytest.mark.parametrize(("fields", "leaf", "retryable"), [
    ({"result": "Not logged in · Please run /login"}, ClaudeAuthError, False),
    ({"result": "Invalid API key · Fix external API key", "api_error_status": 401},
     ClaudeAuthError, False),
    ({"result": "Credit balance is too low", "api_error_status": 400}, ClaudeCreditError, False),
    ({"result": "API Error: Request rejected (429) · rate limited", "api_error_status": 429},
     ClaudeApiError, True),
    ({"result": "API Error: 529 overloaded", "api_error_status": 529}, ClaudeApiError, True),
    ({"result": "API Error: 400 bad request", "api_error_status": 400}, ClaudeApiError, False),
    ({"result": "You've hit your limit · resets 3pm (Europe/London)"}, ClaudeUsageLimit, True),
    # what the real 2.1.197 CLI prints for a subscriber's 429 (see the e2e test)
    ({"result": "You've hit your session limit · resets 2:32pm (UTC)", "api_error_status": 429},
     ClaudeUsageLimit, True),
    ({"result": "You've hit your weekly limit · resets Nov 27, 11am (UTC)",
      "api_error_status": 429}, ClaudeUsageLimit, True),
])
@pytest.mark.parametrize("now", [datetime(2026, 11, 20, tzinfo=UTC),
                                 datetime(2026, 12, 2, 3, 9, tzinfo=UTC),
                                 datetime(2026, 12, 31, 23, 59, tzinfo=UTC)])
def test_reported_failures_map_to_leaves(fields: dict[str, object], leaf: type[EchoError],
                                         retryable: bool, now: datetime) -> None:
    # The clock is set: a reset shown as "Nov 27" is the next Nov 27 on every day of the year.
    with pytest.raises(leaf) as info:
        classify(_out(1, **fields), timeout=5, env={}, now=now)
    assert info.value.retryable is retryable  # type: ignore[attr-defined]
    if leaf is ClaudeUsageLimit:
        retry_at = info.value.retry_at  # type: ignore[attr-defined]
        assert now < retry_at <= now + timedelta(days=366)


def test_a_usage_limit_waits_for_the_streamed_reset_to_the_second() -> None:
    now = datetime(2026, 12, 31, 23, 50, tzinfo=UTC)
    shown = "You've hit your session limit · resets 1:19am (UTC)"
    exact = datetime(2027, 1, 1, 1, 19, 37, tzinfo=UTC)
    with pytest.raises(ClaudeUsageLimit) as info:
        classify(_out(1, result=shown, api_error_status=429), timeout=5, env={}, now=now,
                 resets_at=exact)
    assert info.value.retry_at == exact  # not the shown minute's end (1:20)
    # a refused 429 whose text a later CLI words differently is still the plan's limit
    with pytest.raises(ClaudeUsageLimit) as info:
        classify(_out(1, result="API Error: 429", api_error_status=429), timeout=5, env={},
                 now=now, resets_at=exact)
    assert info.value.retry_at == exact
    # a streamed reset already past (clocks that disagree) or beyond a year: the text decides
    for odd in (now - timedelta(seconds=1), now + timedelta(days=400)):
        with pytest.raises(ClaudeUsageLimit) as info:
            classify(_out(1, result=shown, api_error_status=429), timeout=5, env={}, now=now,
                     resets_at=odd)
        assert info.value.retry_at == datetime(2027, 1, 1, 1, 20, tzinfo=UTC)


def test_crash_signal_and_timeout_are_retryable() -> None:
    env = {"ANTHROPIC_API_KEY": "sk-ant-secret-value-123"}
    crash = ProcessResult(1, b"TypeError: boom", b"key sk-ant-secret-value-123 leaked", 0.1, False)
    with pytest.raises(ClaudeCrashed) as info:
        classify(crash, timeout=5, env=env)
    assert "secret" not in str(info.value) and info.value.retryable
    with pytest.raises(ClaudeCrashed, match="signal 9"):
        classify(ProcessResult(-9, b"", b"", 0.1, False), timeout=5, env={})
    with pytest.raises(ClaudeTimeout):
        classify(ProcessResult(-15, b"", b"", 5.0, True), timeout=5, env={})


def test_usage_limit_reset_is_the_next_occurrence_in_its_zone() -> None:
    now = datetime(2025, 1, 10, 16, 0, tzinfo=UTC)  # 16:00 in London (winter: UTC)
    assert usage_limit_reset("resets 3pm (Europe/London)", now) == datetime(
        2025, 1, 11, 15, 1, tzinfo=UTC)
    assert usage_limit_reset("resets 5:30pm (UTC)", now) == datetime(2025, 1, 10, 17, 31,
                                                                    tzinfo=UTC)
    assert usage_limit_reset("no time here", now) == datetime(2025, 1, 10, 17, 0, tzinfo=UTC)
    # more than 24 hours ahead the CLI prints the date, and the year when it differs
    assert usage_limit_reset("resets Jan 13, 11:30am (Asia/Kolkata)", now) == datetime(
        2025, 1, 13, 6, 1, tzinfo=UTC)
    # the year is shown when it differs (so within the coming year: see test_limits.py)
    assert usage_limit_reset("resets Jan 2, 2026, 3pm (UTC)", datetime(2025, 12, 30, tzinfo=UTC)) \
        == datetime(2026, 1, 2, 15, 1, tzinfo=UTC)


def executor(**options: Any) -> ClaudeExecutor:
    s = Settings()
    return ClaudeExecutor(s.claude, s.database, **options)


def test_argv_uses_role_options_and_payload_cannot_grant_permissions(tmp_path: Path) -> None:
    options = ClaudeRunOptions(model="opus", system_prompt="Be the CTO.",
                               allowed_tools=("Read", "Grep"), max_turns=4, max_budget_usd=0.5)
    ex = executor(options=options)
    task = _task(claude={"model": "haiku", "skip_permissions": True,
                         "allowed_tools": ["Bash"]})
    argv = ex.argv("claude", ex.options_for(task))
    assert argv == ["claude", "-p", "--output-format", "stream-json", "--verbose", "--model", "haiku",
                    "--append-system-prompt", "Be the CTO.", "--allowedTools", "Read,Grep",
                    "--max-turns", "4", "--max-budget-usd", "0.5"]
    bypass = executor(options=ClaudeRunOptions(skip_permissions=True))
    assert "--dangerously-skip-permissions" in bypass.argv("claude", bypass.options_for(_task()))


def test_environment_is_scrubbed_and_config_dir_is_per_slot(tmp_path: Path) -> None:
    source = {"PATH": "/bin", "HOME": "/root", "CLAUDECODE": "1", "ANTHROPIC_API_KEY": "k",
              "ECHO_DATABASE_URL": "postgresql://u:pw@h/db", "GITHUB_TOKEN": "ghp_x",
              "CLAUDE_CODE_USE_BEDROCK": "", "AWS_SECRET_ACCESS_KEY": "a", "LC_ALL": "C"}
    env = claude_env({"X": "1"}, source=source)
    assert env == {"PATH": "/bin", "HOME": "/root", "ANTHROPIC_API_KEY": "k",
                   "CLAUDE_CODE_USE_BEDROCK": "", "LC_ALL": "C", "X": "1"}
    ex = executor(config_dir=tmp_path, config_dir_per_slot=True)
    env = ex.environment(_task())
    assert env["CLAUDE_CONFIG_DIR"] == str(tmp_path / "h_1_0")
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "1" and "CLAUDECODE" not in env


def test_redact_hides_keys() -> None:
    assert redact("x sk-ant-api03-abc_DEF y", {}) == "x sk-ant-*** y"
    assert redact("token tok-12345678", {"ANTHROPIC_AUTH_TOKEN": "tok-12345678"}) == "token ***"


def test_task_retry_backoff_grows_with_jitter_and_caps() -> None:
    """A task's n-th retry waits between d/2 and d, d = min(300, 2**n) seconds."""
    b = DEFAULT_BACKOFF
    for n, (lo, hi) in enumerate([(0.5, 1), (1, 2), (2, 4), (4, 8)]):
        assert all(lo <= b.delay(n) <= hi for _ in range(50))
    assert all(150 <= b.delay(n) <= 300 for n in (9, 10, 1000))


@pytest.mark.parametrize("bad", [
    {"description": " "}, {"task_type": "shell"}, {"priority": 5000}, {"timeout_seconds": 0},
    {"max_retries": -1}, {"delay": -1},
])
def test_new_task_rejects_bad_input(bad: dict[str, object]) -> None:
    from echo.errors import UsageError

    fields: dict[str, object] = {"description": "x", **bad}
    with pytest.raises(UsageError):
        NewTask(**fields).check()  # type: ignore[arg-type]


def test_login_hint_names_where_credentials_are_without_calling_the_api(tmp_path: Path) -> None:
    from echo.work.claude_cli import login_hint

    assert login_hint({"HOME": str(tmp_path)}) is None
    assert login_hint({"HOME": str(tmp_path), "ANTHROPIC_API_KEY": "k"}) == "ANTHROPIC_API_KEY"
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude" / ".credentials.json").write_text("{}")
    assert login_hint({"HOME": str(tmp_path)}) == f"login in {tmp_path / '.claude'}"


def test_claude_command_says_which_mode_and_why(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECHO_", "ANTHROPIC_"))}
    env.update(HOME=str(tmp_path), ECHO_CLAUDE_BIN="/nonexistent/claude")
    done = subprocess.run([sys.executable, "-m", "echo", "claude", "--json"], env=env,
                          capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
    info = json.loads(done.stdout)
    assert info["mode"] == "fallback" and "ECHO_CLAUDE_BIN" in info["reason"]


def test_a_run_with_mcp_servers_waits_for_them_as_long_as_they_may_take_to_start() -> None:
    assert mcp_waits(["claude", "-p"]) == {}
    waits = mcp_waits(["claude", "-p", "--mcp-config", "/s/mcp/cto-1.json"])
    assert waits == MCP_WAIT and waits["MCP_CONNECTION_NONBLOCKING"] == "0"
    assert int(waits["MCP_CONNECT_TIMEOUT_MS"]) >= 30_000  # the CLI's default is 5,000
    mine = mcp_waits(["claude", "--mcp-config", "x"], {"MCP_CONNECT_TIMEOUT_MS": "90000"})
    assert "MCP_CONNECT_TIMEOUT_MS" not in mine  # a wait the user set is theirs
    env = claude_env(source={"MCP_CONNECT_TIMEOUT_MS": "90000", "DATABASE_URL": "postgresql://x"})
    assert env.get("MCP_CONNECT_TIMEOUT_MS") == "90000" and "DATABASE_URL" not in env
