"""The governor's pure parts: reading a plan window's reset, naming outcomes, the
waiting reasons people read, budget input, and `[budget]`/`[claude]` in config files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from echo.config import load_settings
from echo.errors import ClaudeApiError, ClaudeAuthError, ClaudeTimeout, ClaudeUsageLimit, UsageError
from echo.work.governor import ClaimGate, GateView, Pause, RunRecord, Spent, check_amount, outcome_of
from echo.work.governor.ledger import MIN_PAUSE, PAUSE_MARGIN, limit_name, usage
from echo.work.limits import usage_limit_reset


def test_a_reset_shown_in_the_current_minute_is_the_next_minute_not_tomorrow() -> None:
    # The CLI prints the reset rounded down to the minute: at 02:19:10 "resets 2:19am"
    # means 02:19:xx, so the run may start at 02:20, not a day later.
    now = datetime(2026, 11, 26, 2, 19, 10, tzinfo=UTC)
    reset = usage_limit_reset("You've hit your session limit · resets 2:19am (UTC)", now)
    assert reset == datetime(2026, 11, 26, 2, 20, tzinfo=UTC)
    later = usage_limit_reset("You've hit your session limit · resets 2:18am (UTC)", now)
    assert later == datetime(2026, 11, 27, 2, 19, tzinfo=UTC)


def test_a_usage_limit_pauses_its_account_past_the_reset_and_never_too_briefly() -> None:
    now = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    run = RunRecord(kind="task", outcome="ok", account="team")
    far = now + timedelta(hours=2)
    limited = run.with_failure(ClaudeUsageLimit("You've hit your weekly limit · resets", far), now)
    assert (limited.outcome, limited.pause_until, limited.pause_reason) == (
        "usage_limit", far + PAUSE_MARGIN, "weekly limit")
    soon = run.with_failure(ClaudeUsageLimit("hit your session limit", now), now)
    assert soon.pause_until == now + MIN_PAUSE  # a limit still there after its reset: no busy loop
    assert run.with_failure(ClaudeAuthError("x"), now).pause_until is None


@pytest.mark.parametrize(("exc", "outcome"), [
    (ClaudeAuthError("Not logged in"), "auth"),
    (ClaudeApiError("429", 429, retryable=True), "rate_limited"),
    (ClaudeApiError("529", 529, retryable=True), "overloaded"),
    (ClaudeApiError("claude stopped: error_max_budget_usd (x)", None, retryable=False), "max_budget"),
    (ClaudeTimeout("slow"), "timeout"),
])
def test_outcome_classes(exc: Exception, outcome: str) -> None:
    assert outcome_of(exc) == outcome


def test_limit_names_and_usage_from_the_clis_json() -> None:
    assert limit_name("You've hit your Opus limit · resets 3pm") == "opus limit"
    assert limit_name("You've hit your limit") == "usage limit"
    data = {"total_cost_usd": 2.1, "num_turns": 1, "session_id": "s",
            "usage": {"input_tokens": 0, "output_tokens": 0},
            "modelUsage": {"claude-sonnet-5": {"inputTokens": 200000, "outputTokens": 100000}}}
    assert usage(data) == {"cost_usd": 2.1, "input_tokens": 200000, "output_tokens": 100000,
                           "turns": 1, "session_id": "s", "model": "claude-sonnet-5"}


def test_waiting_reasons_name_the_spender_and_the_figures() -> None:
    until = datetime(2026, 11, 26, 2, 20, 5, tzinfo=UTC)
    view = GateView({"role:cto": Spent("role", "cto", 6.3, 5.0),
                     "org:": Spent("org", "", 1.0, 50.0)},
                    {"team": Pause("team", until, "session limit", {})})
    gate = ClaimGate(account="default", role_accounts={"ceo": "team"})
    row = {"status": "pending", "task_type": "claude", "assigned_role": "cto"}
    assert view.reason(row, gate) == "waiting: budget — cto spent $6.30 of $5.00 today"
    assert view.reason({**row, "assigned_role": "ceo"}, gate) == (
        "waiting: paused until 02:20 UTC (session limit)")
    assert view.reason({**row, "assigned_role": "chro"}, gate) is None
    assert view.reason({**row, "task_type": "noop"}, gate) is None  # only Claude waits


@pytest.mark.parametrize("bad", [-1.0, float("nan"), 2e6])
def test_a_budget_is_a_sane_number_of_dollars(bad: float) -> None:
    with pytest.raises(UsageError, match="--daily-usd must be between 0"):
        check_amount(bad)
    assert check_amount(0) == 0 and check_amount(5.004) == 5.0


def test_budget_and_claude_tables_in_a_config_file(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "echo.toml").write_text('namespace = "x"\n[claude]\naccount = "team"\n'
                                        'billing = "subscription"\n[budget]\ndaily_usd = 40\n'
                                        'timezone = "Europe/Paris"\n')
    monkeypatch.setenv("ECHO_CONFIG_DIR", str(tmp_path))
    for name in ("ECHO_CLAUDE_ACCOUNT", "ECHO_CLAUDE_BILLING", "ECHO_BUDGET_DAILY_USD",
                 "ECHO_BUDGET_TIMEZONE"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert (s.claude_account, s.claude_billing, s.budget_daily_usd, s.budget_timezone) == (
        "team", "subscription", 40.0, "Europe/Paris")
    monkeypatch.setenv("ECHO_BUDGET_TIMEZONE", "Mars/Olympus")
    with pytest.raises(UsageError, match="unknown time zone 'Mars/Olympus'"):
        load_settings()
