"""The spend and quota governor with the REAL `claude` CLI against the fake API: the
CLI computes each run's cost from the tokens the fake reports (200,000 in and 100,000
out with sonnet: $2.10), the ledger records it, and the claim statement holds back
what a budget, a plan window or the burn-rate breaker forbids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import anyio
import pytest

from echo.config import Settings
from echo.db import Database
from echo.org.agent.answers import check_select, keyword_select
from echo.org.agent.deciders import ClaudeDecider, answer
from echo.org.roles import load_roles
from echo.work import ClaudeRunOptions, ExecutorPool, TaskQueue
from echo.work.governor import Governor, spend_report
from echo.work.governor.ledger import MIN_PAUSE, PAUSE_MARGIN
from tests.e2e import test_claude_executor as executor_tests
from tests.fakes.anthropic import FakeAnthropic, Reply
from tests.helpers import run_cli, wait_until

pytestmark = pytest.mark.e2e

claude_bin = executor_tests.claude_bin
api = executor_tests.api
ROOT = Path(__file__).resolve().parents[2]

#: $2.10 per run with sonnet, as the CLI computes it.
COSTLY = Reply(text="done", input_tokens=200_000, output_tokens=100_000)
SONNET = ClaudeRunOptions(model="sonnet")


async def settle(pool: ExecutorPool, done: Callable[[], Awaitable[bool]], *,
                 timeout: float = 120) -> None:
    """Wait for `done`, then for three more claim rounds: had the gate let a task through,
    one of them would have claimed it."""
    await wait_until(done, timeout=timeout, interval=0.05)
    start = pool.metrics().claim_rounds
    await wait_until(lambda: pool.metrics().claim_rounds >= start + 3, timeout=30)


def ran(db: Database, n: int) -> Callable[[], Awaitable[bool]]:
    """`n` runs are on the ledger (each written with its task's outcome)."""
    async def check() -> bool:
        async with db.acquire() as conn:
            return bool(await conn.fetchval("SELECT count(*) >= $1 FROM claude_runs", n))
    return check


def completed(q: TaskQueue, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await q.counts())["completed"] >= n
    return check


async def audit(db: Database, subject_type: str) -> list[tuple[str, str]]:
    async with db.acquire() as conn:
        rows = await conn.fetch("SELECT action, actor FROM agent_actions WHERE subject_type = $1 "
                                "ORDER BY id", subject_type)
    return [(r["action"], r["actor"]) for r in rows]


@pytest.mark.timeout(300)
async def test_a_roles_budget_stops_its_runs_and_raising_it_resumes_them(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    api.script(COSTLY)
    governor = Governor(settings.governor, db)
    await governor.set_budget("role", "cto", 5.0, known_roles=["cto"])
    q = TaskQueue(db)
    ids = [(await q.enqueue(f"task {i}", role="cto")).task_id for i in range(5)]
    executor = executor_tests.make_executor(settings, claude_bin, api, tmp_path, options=SONNET)
    pool = ExecutorPool(settings.work, db, {"claude": executor}, concurrency=1)
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        # $2.10, $4.20, then a run capped at the $0.80 left (--max-budget-usd): the CLI
        # stops it after its turn ($6.30 in all) and its task waits, uncounted; nothing
        # starts after it.
        await settle(pool, ran(db, 3))
        assert (await q.counts())["completed"] == 2 and (await q.counts())["pending"] == 3
        assert len(api.message_requests()) == 3

        report = await spend_report(governor)
        [cto] = [r for r in report.roles if r.role == "cto"]
        assert (cto.spent_usd, cto.budget_usd, cto.runs, cto.waiting) == (6.3, 5.0, 3, 3)
        listed = await run_cli(settings, "tasks", "list", "--status", "pending", "--json")
        assert listed.returncode == 0, listed.stderr
        assert {r["waiting"] for r in json.loads(listed.stdout)} == {
            "waiting: budget — cto spent $6.30 of $5.00 today"}
        spent = await run_cli(settings, "spend", "--json")
        data = json.loads(spent.stdout)
        assert data["org"] == {"spent_usd": 6.3, "budget_usd": None, "runs": 3}
        assert {"role": "cto", "spent_usd": 6.3, "budget_usd": 5.0, "runs": 3,
                "waiting": 3}.items() <= next(r for r in data["roles"] if r["role"] == "cto").items()

        raised = await run_cli(settings, "budget", "set", "--role", "cto", "--daily-usd", "20")
        assert raised.returncode == 0, raised.stderr
        await wait_until(completed(q, 5), timeout=120, interval=0.05)  # no restart needed
        pool.stop()
    assert ("budget.update", "operator") in await audit(db, "budget")
    assert len(api.message_requests()) == 6
    capped = await governor.runs_of_task(ids[2])
    assert [(r["outcome"], float(r["cost_usd"])) for r in capped] == [("max_budget", 2.1),
                                                                      ("ok", 2.1)]
    assert (await q.get(ids[2]))["retry_count"] == 0
    for task_id in ids:  # one ledger row per run, with what the CLI reported
        run = (await governor.runs_of_task(task_id))[-1]
        assert run["outcome"] == "ok" and float(run["cost_usd"]) == pytest.approx(2.1)
        assert (run["input_tokens"], run["output_tokens"], run["turns"]) == (200_000, 100_000, 1)
        assert "sonnet" in run["model"] and run["session_id"] and run["role"] == "cto"
        assert run["kind"] == "task" and not run["estimated"]


@pytest.mark.timeout(300)
async def test_the_organisation_budget_holds_across_two_roles(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    api.script(COSTLY)
    # A subscription: no --max-budget-usd, the costs are estimates, the budget still holds.
    org = settings.model_copy(update={"budget_daily_usd": 5.0, "claude_billing": "subscription"})
    governor = Governor(org.governor, db)
    await governor.sync({"cto": None, "ceo": None})  # the configured default, as at start
    q = TaskQueue(db)
    for i in range(2):
        for role in ("cto", "ceo"):
            await q.enqueue(f"{role} task {i}", role=role)
    executor = executor_tests.make_executor(org, claude_bin, api, tmp_path, options=SONNET)
    pool = ExecutorPool(org.work, db, {"claude": executor}, concurrency=1)
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        await settle(pool, completed(q, 3))
        pool.stop()
    assert (await q.counts())["completed"] == 3 and len(api.message_requests()) == 3
    report = await spend_report(governor, roles=["cto", "ceo"])
    assert (report.org.spent_usd, report.org.budget_usd, report.estimated) == (6.3, 5.0, True)
    assert {r.role: r.runs for r in report.roles} == {"ceo": 1, "cto": 2}
    [waiting] = [r for r in report.roles if r.waiting]
    assert waiting.reason == "budget — the organisation spent $6.30 of $5.00 today"


@pytest.mark.timeout(300)
async def test_the_burn_rate_breaker_pauses_everything_alerts_once_and_waits_for_resume(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    api.script(COSTLY)
    burst = settings.model_copy(update={"budget_burst_usd": 3.0, "budget_burst_minutes": 10})
    governor = Governor(burst.governor, db)
    await governor.sync({})
    q = TaskQueue(db)
    for i in range(3):
        await q.enqueue(f"task {i}", role="cto")
    executor = executor_tests.make_executor(burst, claude_bin, api, tmp_path, options=SONNET)
    pool = ExecutorPool(burst.work, db, {"claude": executor}, concurrency=1)
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        await settle(pool, completed(q, 2))  # $4.20 within 10 minutes > $3.00
        assert (await q.counts())["pending"] == 1 and len(api.message_requests()) == 2
        [breaker] = await governor.pauses()
        assert breaker.account == "*" and "echoctl budget resume" in breaker.describe()
        status = await run_cli(burst, "claude")
        assert "burn-rate breaker — $4.20 spent in 10 min (limit $3.00)" in status.stdout
        resumed = await run_cli(burst, "budget", "resume")
        assert resumed.returncode == 0 and "lifted" in resumed.stdout, resumed.stderr
        await wait_until(completed(q, 3), timeout=120, interval=0.05)
        pool.stop()
    async with db.acquire() as conn:
        alerts = await conn.fetch("SELECT * FROM messages WHERE kind = 'system'")
    [alert] = alerts  # one alert; after the resume only new spend counts
    assert alert["channel"] == "messages:all" and "burn-rate breaker" in alert["subject"]
    assert alert["body"]["top"][0]["role"] == "cto" and alert["body"]["spent_usd"] == 4.2
    assert [a for a, _ in await audit(db, "account")] == ["breaker.tripped", "breaker.resumed"]
    assert await governor.pauses() == []


async def test_workflow_questions_fall_back_with_reason_budget_and_runs_are_ledger_rows(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    role = load_roles(settings.agents_dir)["cto"]
    governor = Governor(settings.governor, db)
    s = settings.model_copy(update={"claude_bin": claude_bin})
    decider = ClaudeDecider(s, role, env={**api.env(), "HOME": str(home)}, governor=governor)
    api.script(Reply(text='{"participate": true, "confidence": 0.9, "reason": "a database"}',
                     input_tokens=200_000, output_tokens=100_000))

    def ask() -> object:
        return answer(decider, "[echo:select] take part?", 60, check_select,
                      lambda: keyword_select(role, "database migration", ""),
                      workflow="wf-1", step="select")

    await governor.set_budget("role", "cto", 0.0, known_roles=["cto"])
    got = await ask()  # type: ignore[misc]
    assert got.source == "fallback"
    assert got.fallback_reason == "budget — cto spent $0.00 of $0.00 today"
    assert api.message_requests() == [] and decider.runs == 0

    await governor.set_budget("role", "cto", 5.0, known_roles=["cto"])
    got = await ask()  # type: ignore[misc]
    assert got.source == "llm" and got.data["participate"] is True
    # A CLI that never reached the API (not logged in) is a row too, at cost 0.
    logged_out = ClaudeDecider(s, role, env={**api.env(None), "HOME": str(home)},
                               governor=governor)
    got = await answer(logged_out, "[echo:vote] vote?", 60, lambda d: d,
                       lambda: {"vote": "approve"}, workflow="wf-1", step="vote")
    assert got.source == "fallback" and "Not logged in" in str(got.fallback_reason)
    async with db.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM claude_runs ORDER BY run_id")
    assert [(r["kind"], r["workflow_id"], r["step"], r["outcome"], float(r["cost_usd"]))
            for r in rows] == [("question", "wf-1", "select", "ok", 2.1),
                               ("question", "wf-1", "vote", "auth", 0.0)]
    assert len(api.message_requests()) == 1


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.timeout(300)
async def test_a_new_day_in_the_organisations_zone_lets_the_work_go_on(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    api.script(COSTLY)
    paris = ZoneInfo("Europe/Paris")
    zoned = settings.model_copy(update={"budget_timezone": "Europe/Paris",
                                        "claude_billing": "subscription"})
    clock = Clock(datetime(2026, 3, 1, 23, 58, tzinfo=paris))
    governor = Governor(zoned.governor, db, clock=clock)
    await governor.set_budget("role", "cto", 3.0, known_roles=["cto"])
    q = TaskQueue(db)
    for i in range(3):
        await q.enqueue(f"task {i}", role="cto")
    executor = executor_tests.make_executor(zoned, claude_bin, api, tmp_path, options=SONNET)
    pool = ExecutorPool(zoned.work, db, {"claude": executor}, concurrency=1, gate=governor.gate)
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        await settle(pool, completed(q, 2))  # $4.20 of $3.00 on March 1st
        assert (await q.counts())["pending"] == 1
        assert (await spend_report(governor)).day == date(2026, 3, 1)
        # 00:00:30 in Paris is still March 1st in UTC: only the zone makes it a new day.
        clock.now = datetime(2026, 3, 2, 0, 0, 30, tzinfo=paris)
        assert clock.now.astimezone(UTC).date() == date(2026, 3, 1)
        pool.wake()
        await wait_until(completed(q, 3), timeout=120, interval=0.05)
        pool.stop()
    report = await spend_report(governor, by="day", since="2026-03-01")
    assert report.day == date(2026, 3, 2) and report.org.spent_usd == 2.1
    assert [(r.key, r.runs) for r in report.rows] == [("2026-03-01", 2), ("2026-03-02", 1)]


@pytest.fixture
def worker_procs(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.mark.timeout(300)
async def test_two_workers_on_one_account_stop_at_a_usage_limit_until_the_reset(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path,
    worker_procs: list[subprocess.Popen[bytes]],
) -> None:
    api.limit_for(20, "five_hour")  # a subscriber's session limit, 20 s from the first run
    api.script(Reply(text="after the reset"))
    q = TaskQueue(db)
    for i in range(4):
        await q.enqueue(f"task {i}", max_retries=0)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECHO_", "ANTHROPIC_"))}
    env.update(settings.child_env(), **api.env(None, oauth_token="sk-ant-oat01-test-0123456789"),
               HOME=str(home), TZ="UTC", ECHO_CLAUDE_BIN=claude_bin, ECHO_LOG_LEVEL="WARNING",
               ECHO_CLAUDE_ACCOUNT="team-plan", CLAUDE_CODE_MAX_RETRIES="0")
    env.pop("ECHO_ENV", None)
    for i in range(2):
        log = open(tmp_path / f"worker-{i}.log", "wb")  # noqa: SIM115
        worker_procs.append(subprocess.Popen(
            [sys.executable, "-m", "echo", "worker", "--executor", "claude", "--concurrency", "1"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    account = settings.model_copy(update={"claude_account": "team-plan"})
    governor = Governor(account.governor, db)

    async def paused() -> bool:
        return bool(await governor.pauses())

    await wait_until(paused, timeout=90, interval=0.1)
    [pause] = await governor.pauses()
    assert pause.account == "team-plan" and pause.reason == "session limit"
    shown = f"paused until {pause.until.astimezone(UTC):%H:%M} UTC (session limit)"
    claude = await run_cli(account, "claude")
    assert shown in claude.stdout, claude.stdout
    status = await run_cli(account, "status")
    assert shown in status.stdout, status.stdout

    await wait_until(completed(q, 4), timeout=180, interval=0.2)
    reset = api.limit_reset
    assert reset is not None
    requests = api.message_requests()
    # The pause ends at the reset the API announced (to the second, from the stream), plus
    # the margin, or after the shortest pause from a refused run (one per worker at most),
    # whichever is later: not at the end of the minute the CLI's text shows.
    refused = [r.at for r in requests if r.at < reset]
    margin, shortest = PAUSE_MARGIN.total_seconds(), MIN_PAUSE.total_seconds()
    earliest = max(reset + margin, min(refused) + shortest) - 1
    latest = max(reset + margin, max(refused) + shortest) + 5
    assert earliest <= pause.until.timestamp() <= latest, (pause, reset, refused)
    # Before the pause ends, each worker made at most the one run it had started.
    assert len([r for r in requests if r.at < pause.until.timestamp()]) <= 2
    assert len([r for r in requests if r.at >= reset]) == 4  # then every task ran once
    async with db.acquire() as conn:
        rows = await conn.fetch("SELECT retry_count, status FROM agent_tasks")
        runs = await conn.fetch("SELECT outcome, account FROM claude_runs ORDER BY run_id")
    assert {(r["retry_count"], r["status"]) for r in rows} == {(0, "completed")}
    assert [r["outcome"] for r in runs].count("ok") == 4
    assert {r["account"] for r in runs} == {"team-plan"}
    assert 1 <= [r["outcome"] for r in runs].count("usage_limit") <= 2


async def test_bad_budget_input_is_one_line_and_exit_2(settings: Settings) -> None:
    cases = [(("--role", "cto", "--daily-usd", "-1"), "--daily-usd must be between 0"),
             (("--role", "nobody", "--daily-usd", "5"), "unknown role 'nobody'"),
             (("--workflow", "wf-404", "--daily-usd", "5"), "unknown workflow 'wf-404'"),
             (("--org", "--role", "cto", "--daily-usd", "5"), "exactly one of")]
    for args, words in cases:
        out = await run_cli(settings, "budget", "set", *args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, out.stderr)
    out = await run_cli(settings, "spend", "--by", "colour")
    assert out.returncode == 2 and "unknown grouping 'colour'" in out.stderr
