"""Claude runs that are watched, resumable and visible (issue 21), with the REAL `claude`
CLI against the fake API: the run's events in `tasks show --json`; a stall killed by
the watchdog and resumed (the resumed request carries the earlier turns, the task
completes once, the ledger links both attempts); a loop stopped and not retried; a
worker SIGKILLed mid-run whose task another worker, with another CLAUDE_CONFIG_DIR,
resumes from the transcript mirrored to Postgres; a run cut at its budget
(--max-budget-usd) that continues its session once the budget is raised."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import anyio
import pytest

from echo.config import Settings
from echo.db import Database
from echo.runtime import Backoff
from echo.work import ClaudeRunOptions, ExecutorPool, TaskQueue
from echo.work.governor import Governor
from echo.work.runs.sessions import transcript_path
from tests.e2e import test_claude_executor as executor_tests
from tests.fakes.anthropic import FakeAnthropic, held, stall, text, tool_use
from tests.helpers import no_claude_left, run_cli, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

claude_bin = executor_tests.claude_bin
api = executor_tests.api
ROOT = Path(__file__).resolve().parents[2]
FAST = Backoff(initial=0.05, max=0.1)
READ = ClaudeRunOptions(model="sonnet", allowed_tools=("Read",))


def workdir(tmp_path: Path) -> Path:
    where = tmp_path / "work"
    where.mkdir(exist_ok=True)
    (where / "notes.txt").write_text("the notes say 42\n")
    return where


async def run_task(settings: Settings, db: Database, executor: object, **task: object) -> int:
    """Enqueue one claude task and run a pool until it is final; its id."""
    q = TaskQueue(db)
    made = await q.enqueue("read the notes", task_type="claude", **task)
    pool = ExecutorPool(settings.work, db, {"claude": executor}, concurrency=1,  # type: ignore[dict-item]
                        backoff=FAST)
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)

        async def final() -> bool:
            return (await q.get(made.task_id))["status"] in ("completed", "failed", "dead")

        await wait_until(final, timeout=180, interval=0.05)
        pool.stop()
    return made.task_id


def claude_worker(settings: Settings, api: FakeAnthropic, claude_bin: str, tmp_path: Path,
                  *args: str) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """A real `echoctl worker` for claude tasks (one slot, a 3 s task lease, its own
    config dir), logging to tmp_path/worker.log: a worker a test can SIGKILL mid-run."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, **settings.child_env(), **api.env("sk-ant-test-0123456789"),
           "HOME": str(home), "ECHO_LOG_LEVEL": "WARNING", "ECHO_CLAUDE_BIN": claude_bin,
           "ECHO_CLAUDE_IDLE_TIMEOUT": "600"}
    env.pop("ECHO_ENV", None)
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "echo", "worker", "--executor", "claude", "--concurrency", "1",
         "--lease", "3", "--claude-config-dir", str(tmp_path / "first-config"), *args],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return worker, log



async def test_a_runs_events_are_in_tasks_show(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    notes = workdir(tmp_path) / "notes.txt"
    api.conversation(tool_use("Read", {"file_path": str(notes)}), text("The notes say 42."))
    executor = executor_tests.make_executor(settings, claude_bin, api, tmp_path, options=READ)
    executor.cwd = notes.parent
    task_id = await run_task(settings, db, executor)
    shown = await run_cli(settings, "tasks", "show", str(task_id), "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["status"] == "completed", data["error"]
    kinds = [e["kind"] for e in data["events"]]
    assert kinds[0] == "init" and kinds[-1] == "result"
    assert "tool_use" in kinds and "tool_result" in kinds
    tool = next(e for e in data["events"] if e["kind"] == "tool_use")
    assert tool["summary"] == f"Read {notes}" and tool["turn"] == 1
    assert "the notes say 42" in next(e["summary"] for e in data["events"]
                                      if e["kind"] == "tool_result")
    assert {e["session_id"] for e in data["events"]} == {data["session_id"]}
    assert data["events"][-1]["cost_usd"] == pytest.approx(float(data["cost_usd"]))
    listed = await run_cli(settings, "tasks", "show", str(task_id))
    assert f"Read {notes}" in listed.stdout and "tool_result" in listed.stdout
    followed = await run_cli(settings, "tasks", "show", str(task_id), "--follow")
    assert followed.returncode == 0 and f"Read {notes}" in followed.stdout
    assert f"task {task_id} completed" in followed.stdout


async def test_a_stall_is_killed_by_the_watchdog_and_the_retry_resumes_the_session(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    notes = workdir(tmp_path) / "notes.txt"
    # Turn 0 reads the notes; turn 1 goes silent mid-stream (the first time it is asked).
    api.conversation(tool_use("Read", {"file_path": str(notes)}), stall(text("All done: 42.")))
    quick = settings.model_copy(update={"claude_idle_timeout": 20.0})
    executor = executor_tests.make_executor(quick, claude_bin, api, tmp_path, options=READ)
    executor.cwd = notes.parent
    task_id = await run_task(quick, db, executor, max_retries=2)
    row = await TaskQueue(db).get(task_id)
    assert row["status"] == "completed", row["error"]
    assert row["result"]["result"] == "All done: 42." and row["retry_count"] == 1
    runs = await Governor(settings.governor, db).runs_of_task(task_id)
    assert [(r["attempt"], r["outcome"], r["resumed_attempt"]) for r in runs] == [
        (1, "hung", None), (2, "ok", 1)]
    assert runs[0]["session_id"] == runs[1]["session_id"] == row["session_id"]
    # The resumed request carries the earlier turns: the tool call and what it read.
    session = api.session_requests()
    resumed = session[-1]
    assert len(session) == 3 and resumed.assistant_turns >= 1
    carried = json.dumps(resumed.body["messages"])
    assert "tool_use" in carried and "the notes say 42" in carried and "interrupted" in carried
    events = [e for e in await executor.store.events(task_id)]  # type: ignore[union-attr]
    assert ("watchdog", 1) in [(e["kind"], e["attempt"]) for e in events]
    assert ("resume", 2) in [(e["kind"], e["attempt"]) for e in events]
    no_claude_left()


async def test_the_same_tool_call_over_and_over_is_a_loop_stopped_and_not_retried(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    notes = workdir(tmp_path) / "notes.txt"
    # Three turns make the same call; a fourth turn is never answered, so the CLI can
    # only ever make the call three times, however late the watchdog's kill lands.
    read = tool_use("Read", {"file_path": str(notes)})
    api.conversation(read, read, read, held("a fourth call", read))
    looping = settings.model_copy(update={"claude_loop_repeats": 3})
    executor = executor_tests.make_executor(looping, claude_bin, api, tmp_path, options=READ)
    executor.cwd = notes.parent
    task_id = await run_task(looping, db, executor, max_retries=3)
    row = await TaskQueue(db).get(task_id)
    assert row["status"] == "failed" and row["retry_count"] == 0
    assert "same tool call 3 times in a row" in row["error"]
    [run] = await Governor(settings.governor, db).runs_of_task(task_id)
    assert run["outcome"] == "loop" and run["turns"] == 3
    # The kill follows the third call's event; the CLI may have sent its next request
    # by then (a busy machine), never more than that one.
    assert len(api.session_requests()) in (3, 4)
    no_claude_left()


async def test_a_worker_killed_mid_run_is_resumed_by_another_from_the_mirrored_transcript(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    notes = workdir(tmp_path) / "notes.txt"
    api.conversation(tool_use("Read", {"file_path": str(notes)}), stall(text("Resumed: 42.")))
    q = TaskQueue(db)
    made = await q.enqueue("read the notes", task_type="claude",
                           payload={"cwd": str(notes.parent)})
    worker, log = claude_worker(settings, api, claude_bin, tmp_path)
    try:
        async def mirrored() -> bool:  # the tool's result is in Postgres' copy
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            async with db.acquire() as conn:
                chunks = await conn.fetch("SELECT chunk FROM claude_transcripts")
            return b"the notes say 42" in b"".join(bytes(c["chunk"]) for c in chunks)

        await wait_until(mirrored, timeout=120, interval=0.1)
        await wait_until(lambda: len(api.session_requests()) == 2, timeout=30)  # stalled
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
        log.close()
    session_id = (await q.get(made.task_id))["session_id"] or await _session(db, made.task_id)
    (tmp_path / "second").mkdir()
    second = executor_tests.make_executor(settings, claude_bin, api, tmp_path / "second",
                                          options=ClaudeRunOptions(allowed_tools=("Read",)))
    second.cwd = None  # the task's own working directory, as the first worker had it
    pool = ExecutorPool(settings.work, db, {"claude": second}, concurrency=1, backoff=FAST,
                        lease_seconds=3)
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)

        async def done() -> bool:
            return (await q.get(made.task_id))["status"] == "completed"

        await wait_until(done, timeout=120, interval=0.1)
        pool.stop()
    row = await q.get(made.task_id)
    assert row["result"]["result"] == "Resumed: 42." and row["session_id"] == session_id
    [run] = await Governor(settings.governor, db).runs_of_task(made.task_id)  # the killed one wrote none
    assert run["outcome"] == "ok" and run["resumed_attempt"] == 1 and run["attempt"] == 2
    restored = transcript_path(tmp_path / "second" / "claude-config", notes.parent, session_id)
    assert restored.is_file()  # restored from Postgres into a config dir it never saw
    carried = json.dumps(api.session_requests()[-1].body["messages"])
    assert "the notes say 42" in carried and "tool_use" in carried
    no_claude_left()


async def test_a_run_cut_at_its_budget_resumes_its_session_once_the_budget_is_raised(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    notes = workdir(tmp_path) / "notes.txt"
    # Turn 0 reads the notes (cheap); turn 1 costs $1.53 (10k tokens in, 100k out, with
    # sonnet), over the $1 left of the CTO's budget: the CLI (--max-budget-usd 1) stops
    # there. The CLI drops that cut turn's unfinished tool call from the session (2.1.197),
    # so the resumed session holds the prompt and turn 0, and its next turn answers. (On a
    # busy machine the CLI may read the whole turn first and keep it: the resumed session
    # then runs that Read and answers. With 200k tokens in, that kept turn filled the
    # context and the resume was refused, "Prompt is too long": a fresh-clone run failed.)
    api.conversation(tool_use("Read", {"file_path": str(notes)}),
                     tool_use("Read", {"file_path": str(notes)}, input_tokens=10_000,
                              output_tokens=100_000),
                     text("All done: 42."))
    governor = Governor(settings.governor, db)
    await governor.set_budget("role", "cto", 1.0, known_roles=["cto"])
    executor = executor_tests.make_executor(settings, claude_bin, api, tmp_path, options=READ)
    executor.cwd = notes.parent
    q = TaskQueue(db)
    made = await q.enqueue("read the notes", task_type="claude", role="cto", max_retries=0)
    pool = ExecutorPool(settings.work, db, {"claude": executor}, concurrency=1, backoff=FAST)
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)

        async def cut() -> bool:
            return [r["outcome"] for r in await governor.runs_of_task(made.task_id)] == [
                "max_budget"]

        await wait_until(cut, timeout=120, interval=0.05)
        held = await q.get(made.task_id)
        assert held["status"] == "pending" and held["retry_count"] == 0  # waits, uncounted
        before = len(api.session_requests())
        raised = await run_cli(settings, "budget", "set", "--role", "cto", "--daily-usd", "20")
        assert raised.returncode == 0, raised.stderr

        async def final() -> bool:
            return (await q.get(made.task_id))["status"] in ("completed", "failed", "dead")

        await wait_until(final, timeout=120, interval=0.05)
        pool.stop()
    row = await q.get(made.task_id)
    assert row["status"] == "completed", row["error"]
    assert row["result"]["result"] == "All done: 42." and row["retry_count"] == 0
    runs = await governor.runs_of_task(made.task_id)
    assert [(r["outcome"], r["resumed_attempt"]) for r in runs] == [
        ("max_budget", None), ("ok", runs[0]["attempt"])]
    assert runs[0]["session_id"] == runs[1]["session_id"] == row["session_id"]
    # The resumed request carries the earlier turns: the tool call and what it read.
    [resumed] = api.session_requests()[before:]
    carried = json.dumps(resumed.body["messages"])
    assert resumed.assistant_turns >= 1 and "tool_use" in carried
    assert "the notes say 42" in carried and "stopped at its budget" in carried
    no_claude_left()


async def _session(db: Database, task_id: int) -> str:
    async with db.acquire() as conn:
        return str(await conn.fetchval(
            "SELECT session_id FROM claude_sessions WHERE task_id = $1 ORDER BY attempt LIMIT 1",
            task_id))
