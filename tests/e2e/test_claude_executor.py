"""The Claude executor with the REAL `claude` CLI (pinned 2.1.197) against a fake
Anthropic API on 127.0.0.1: success, not logged in, 429 then success, a subscriber's
usage limit (back to pending until the announced reset), an API that never answers
(timeout, group killed, no zombie), and `claude` not installed."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import psutil
import pytest

from echo.config import Settings
from echo.db import Database
from echo.errors import ClaudeAuthError, ClaudeNotInstalled, ClaudeTimeout
from echo.runtime import Backoff
from echo.work import (
    ClaudeExecutor,
    ClaudeRunOptions,
    ExecutorPool,
    Task,
    TaskQueue,
)
from echo.work.claude_cli import LOCAL_CLAUDE
from echo.work.governor import ClaimGate, Governor
from echo.work.governor.ledger import PAUSE_MARGIN
from tests.conftest import unavailable
from tests.fakes.anthropic import HANG, FakeAnthropic, error, text, usage_limit
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

FAST = Backoff(initial=0.05, max=0.1)


@pytest.fixture
def claude_bin() -> str:
    if not os.access(LOCAL_CLAUDE, os.X_OK):
        unavailable(f"the pinned Claude CLI is not installed at {LOCAL_CLAUDE}; run `make setup`")
    return str(LOCAL_CLAUDE)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAnthropic]:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
                 "ANTHROPIC_BASE_URL", "CLAUDECODE"):
        monkeypatch.delenv(name, raising=False)
    with FakeAnthropic() as fake:
        yield fake


def make_executor(settings: Settings, claude_bin: str, api: FakeAnthropic, tmp_path: Path,
                  *, api_key: str | None = "sk-ant-test-0123456789", oauth_token: str | None = None,
                  tz: str = "UTC", **kw: object) -> ClaudeExecutor:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {**api.env(api_key, oauth_token=oauth_token), "HOME": str(home), "TZ": tz,
           "ECHO_TEST_MARKER": kw.pop("marker", "x")}
    return ClaudeExecutor(settings.claude.model_copy(update={"claude_bin": claude_bin}),
                          settings.database, env=env,
                          config_dir=tmp_path / "claude-config", cwd=tmp_path,
                          **kw)  # type: ignore[arg-type]


async def run_one(settings: Settings, db: Database, executor: ClaudeExecutor,
                  **task: object) -> dict[str, object]:
    """Enqueue one claude task, run a pool until it is final, return its row."""
    q = TaskQueue(db)
    made = await q.enqueue(str(task.pop("description", "say hello")), task_type="claude",
                           **task)
    pool = ExecutorPool(settings.work, db, {"claude": executor}, concurrency=1, backoff=FAST)
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        async def final() -> bool:
            return (await q.get(made.task_id))["status"] in ("completed", "failed", "dead")

        await wait_until(final, timeout=60, interval=0.05)
        pool.stop()
    return await q.get(made.task_id)


async def test_success_stores_result_cost_and_session(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    api.script(text("Hello from the fake API"))
    options = ClaudeRunOptions(model="sonnet", system_prompt="You are the CTO.",
                               allowed_tools=("Read", "Grep"), max_turns=3)
    executor = make_executor(settings, claude_bin, api, tmp_path, options=options)
    row = await run_one(settings, db, executor, description="Plan the migration")
    assert row["status"] == "completed", row["error"]
    result = row["result"]
    assert isinstance(result, dict) and result["result"] == "Hello from the fake API"
    assert float(row["cost_usd"]) > 0 and row["session_id"] == result["session_id"]
    [request] = api.message_requests()
    body = request.body
    assert request.path == "/v1/messages?beta=true" and body["stream"] is True
    assert "sonnet" in body["model"]
    assert "Plan the migration" in str(body["messages"])
    assert "You are the CTO." in str(body["system"])
    assert request.headers.get("x-api-key") == "sk-ant-test-0123456789"
    assert (tmp_path / "claude-config").is_dir()


async def test_not_logged_in_fails_once_and_is_not_retried(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    executor = make_executor(settings, claude_bin, api, tmp_path, api_key=None)
    row = await run_one(settings, db, executor, max_retries=3)
    assert row["status"] == "failed" and row["retry_count"] == 0
    assert "Not logged in" in str(row["error"]) and "ANTHROPIC_API_KEY" in str(row["error"])
    assert api.message_requests() == []


async def test_invalid_api_key_is_an_auth_error_without_the_key(
    settings: Settings, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    api.script(error(401, "invalid x-api-key"))
    executor = make_executor(settings, claude_bin, api, tmp_path, cli_max_retries=0)
    task = _task(timeout=60)
    with pytest.raises(ClaudeAuthError) as info:
        await executor.execute(task)
    assert "Invalid API key" in str(info.value)
    assert "sk-ant-test" not in str(info.value)


async def test_a_429_is_retried_by_the_queue_then_succeeds(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    api.script(error(429, "rate limited"), text("after the limit"))
    executor = make_executor(settings, claude_bin, api, tmp_path, cli_max_retries=0)
    row = await run_one(settings, db, executor, max_retries=2)
    assert row["status"] == "completed" and row["retry_count"] == 1
    assert isinstance(row["result"], dict) and row["result"]["result"] == "after the limit"
    assert len(api.message_requests()) == 2
    history = await TaskQueue(db).history(int(str(row["task_id"])))
    assert [h["action"] for h in history] == [
        "task.enqueued", "task.claimed", "task.retry_scheduled", "task.claimed", "task.completed"]
    assert "429" in history[2]["details"]["error"]


async def test_a_subscribers_usage_limit_waits_for_the_announced_reset(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    # Only a claude.ai (OAuth) session reads the plan's limit headers; an API key makes
    # the same 429 a plain retryable one. Each reset is on a whole minute, as the CLI
    # prints it, in a zone with a half-hour offset: within 24 hours the CLI prints the
    # time alone ("resets 5:02pm (Asia/Kolkata)"), later the date too ("resets Nov 27, …").
    # Each case runs as its own account: the first limit pauses its account for hours.
    q = TaskQueue(db)
    cases = [("five_hour", timedelta(hours=3), "session limit · resets ", "session limit"),
             ("seven_day", timedelta(days=3), "weekly limit · resets ", "weekly limit")]
    for n, (claim, ahead, words, window) in enumerate(cases, start=1):
        account = settings.model_copy(update={"claude_account": f"plan-{n}"})
        executor = make_executor(account, claude_bin, api, tmp_path, api_key=None,
                                 oauth_token="sk-ant-oat01-test-0123456789", tz="Asia/Kolkata",
                                 cli_max_retries=0)
        reset = (int(time.time()) // 60) * 60 + int(ahead.total_seconds())
        api.script(usage_limit(reset + 17, claim))  # 17 s past the minute the CLI shows
        made = await q.enqueue(f"say hello ({claim})", task_type="claude", max_retries=0)
        pool = ExecutorPool(account.work, db, {"claude": executor}, concurrency=1, backoff=FAST,
                            gate=ClaimGate.from_settings(account.governor))
        async with anyio.create_task_group() as tg:
            await tg.start(pool.run)
            await wait_until(lambda task_id=made.task_id: _has_error(q, task_id), timeout=60)
            pool.stop()
        row = await q.get(made.task_id)
        # Back to pending, not counted as a retry (max_retries=0 would otherwise make it
        # dead), to run at the reset the API announced, to the second (the stream's
        # rate_limit_event), not at the end of the minute the text shows.
        assert row["status"] == "pending" and row["retry_count"] == 0, row
        assert words in str(row["error"]) and "(Asia/Kolkata)" in str(row["error"]), row
        assert "oat01" not in str(row["error"])
        expected = datetime.fromtimestamp(reset + 17, UTC)
        late = expected + PAUSE_MARGIN + timedelta(seconds=1)  # the margin, then the statement's
        assert expected <= row["run_after"] <= late, (row, expected)
        # The account is paused until then, for every worker: the governor's record.
        [pause] = [p for p in await Governor(account.governor, db).pauses() if p.account == f"plan-{n}"]
        assert pause.reason == window and expected <= pause.until <= late, (pause, expected)
        [run] = await Governor(account.governor, db).runs_of_task(made.task_id)
        assert run["outcome"] == "usage_limit" and float(run["cost_usd"]) == 0
        history = await q.history(made.task_id)
        assert [h["action"] for h in history] == [
            "task.enqueued", "task.claimed", "task.released"]
        # one request per task: neither the CLI nor the pool tried again before the reset
        requests = api.message_requests()
        assert len(requests) == n
        headers = {k.lower(): v for k, v in requests[-1].headers.items()}
        assert headers.get("authorization") == "Bearer sk-ant-oat01-test-0123456789"
        assert "x-api-key" not in headers


async def _has_error(q: TaskQueue, task_id: int) -> bool:
    row = await q.get(task_id)
    return row["status"] != "running" and row["error"] is not None


async def test_an_api_that_never_answers_times_out_and_leaves_no_process(
    settings: Settings, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    api.script(HANG)
    marker = uuid.uuid4().hex
    executor = make_executor(settings, claude_bin, api, tmp_path, marker=marker, kill_grace=1.0)
    # The wall clock must cover the CLI's own start (about 0.8 s of CPU, several seconds on
    # a loaded 2-core machine) so that it is really waiting on the API when time runs out.
    with pytest.raises(ClaudeTimeout):
        with anyio.fail_after(60):
            await executor.execute(_task(timeout=10))
    assert len(api.message_requests()) >= 1  # it really was waiting on the API
    me = psutil.Process()
    assert [c for c in me.children(recursive=True) if c.status() == psutil.STATUS_ZOMBIE] == []
    assert _processes_with_marker(marker) == []


async def test_claude_not_installed_is_one_clear_error(
    settings: Settings, api: FakeAnthropic, tmp_path: Path
) -> None:
    missing = settings.model_copy(update={"claude_bin": "/nonexistent/bin/claude"})
    with pytest.raises(ClaudeNotInstalled) as info:
        await ClaudeExecutor(missing.claude, missing.database).execute(_task(timeout=5))
    message = str(info.value)
    assert "ECHO_CLAUDE_BIN" in message and "@anthropic-ai/claude-code" in message
    assert "\n" not in message
    not_on_path = settings.model_copy(update={"claude_bin": f"claude-{uuid.uuid4().hex}"})
    with pytest.raises(ClaudeNotInstalled):
        ClaudeExecutor(not_on_path.claude, not_on_path.database, local_bin=None).binary()


def _task(*, timeout: int) -> Task:
    from datetime import UTC, datetime

    return Task(task_id=1, task_type="claude", description="say hello", priority=0, role=None,
                worker_id="test:1:0", attempt=1, timeout_seconds=timeout, max_retries=0,
                retry_count=0, payload={}, started_at=datetime.now(UTC))


def _processes_with_marker(marker: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("ECHO_TEST_MARKER") == marker:
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found
