"""The retry decision (echo.work.pool.retry): what an executor's error means for its
task, at an injected moment (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echo.errors import (
    ClaudeAuthError,
    ClaudeDeferred,
    ClaudeHung,
    ClaudeLoop,
    ClaudeUsageLimit,
    CommandFailed,
    UsageError,
    WorkspaceError,
)
from echo.runtime import Backoff
from echo.work.governor import RunRecord
from echo.work.pool.retry import failure_of
from echo.work.tasks import Task

NOW = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)  # injected; never the wall clock
STEPS = Backoff(initial=2.0, factor=2.0, max=300.0)  # no jitter: delays are exact


def task(retry_count: int = 0) -> Task:
    return Task(7, "claude", "review", 0, "cto", "h:1:0", retry_count + 1, 60, 3,
                retry_count, {}, NOW)


def test_a_plan_limit_retries_at_its_reset_without_using_a_retry() -> None:
    reset = NOW + timedelta(hours=1, minutes=15)  # past midnight, into next year
    f = failure_of(task(2), ClaudeUsageLimit("usage limit", reset), backoff=STEPS, now=NOW)
    assert (f.retryable, f.counted, f.delay) == (True, False, 4500.0)


def test_the_accounts_pause_the_run_met_is_when_it_runs_again() -> None:
    exc = ClaudeHung("no output for 300 s")
    exc.run = RunRecord("task", "hung", pause_until=NOW + timedelta(minutes=5))
    f = failure_of(task(), exc, backoff=STEPS, now=NOW)
    assert (f.retryable, f.counted, f.delay, f.run) == (True, False, 300.0, exc.run)


def test_a_run_waiting_for_approval_holds_nothing_and_uses_no_retry() -> None:
    f = failure_of(task(), ClaudeDeferred("awaiting approval: Bash(rm -rf build)"),
                   backoff=STEPS, now=NOW)
    assert (f.awaiting, f.retryable, f.counted) == (True, True, False)


@pytest.mark.parametrize("exc", [UsageError("no such file"), ClaudeAuthError("not logged in"),
                                 ClaudeLoop("same call 20 times"), CommandFailed("exit 2")])
def test_what_retrying_cannot_fix_fails_at_once(exc: Exception) -> None:
    f = failure_of(task(), exc, backoff=STEPS, now=NOW)
    assert not f.retryable
    assert f.error == str(exc)


@given(st.integers(min_value=0, max_value=20))
def test_a_retryable_error_waits_its_backoff_and_counts(retries: int) -> None:
    for exc in (CommandFailed("killed by signal 9", retryable=True), WorkspaceError("lock")):
        f = failure_of(task(retries), exc, backoff=STEPS, now=NOW)
        assert (f.retryable, f.counted, f.delay) == (True, True, STEPS.delay(retries))


def test_a_crash_is_retried_and_named_and_a_nul_cannot_reach_the_database() -> None:
    f = failure_of(task(), RuntimeError("bad\x00byte"), backoff=STEPS, now=NOW)
    assert f.retryable and f.counted
    assert f.error == "executor crashed: RuntimeError: bad\\0byte"
