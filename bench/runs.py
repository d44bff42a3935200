"""Claude runs that are watched and recorded (issue 21): what the watching costs.

- `run_overhead`: one task run by the executor, stream read, events, session and
  transcript written to Postgres under the attempt's guard, against a bare
  `claude -p --output-format stream-json --verbose` run of the same conversation (a
  tool call, then an answer) against the same fake API, interleaved; medians.
  Target: at most 2% over the bare run.
- `events_written`: run events stored per second by the recorder (batched, guarded),
  against one-row guarded INSERTs committed one by one, in the same run.
- `resume_tokens`: what a retry sends after a stall at the 4th turn: resuming sends the
  earlier turns once, in one request; starting over replays every turn. Bytes of the
  requests' messages (a proxy for input tokens: about 4 bytes a token).

    python -m bench.runs          (ECHO_TEST_DATABASE_URL or an embedded Postgres)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import bench_settings, emit  # noqa: E402
from echo.config import Settings  # noqa: E402
from echo.db import Database  # noqa: E402
from echo.work import ClaudeExecutor, ClaudeRunOptions, TaskQueue  # noqa: E402
from echo.work.claude_cli import LOCAL_CLAUDE  # noqa: E402
from echo.work.runs import PgRunStore, RunEvent, RunRecorder  # noqa: E402
from echo.work.tasks import Task  # noqa: E402
from tests.fakes.anthropic import FakeAnthropic, Request, stall, text, tool_use  # noqa: E402

RUNS = int(os.environ.get("ECHO_BENCH_RUNS", "7"))
EVENTS = 20_000


async def _claimed(db: Database, n: int) -> list[Task]:
    q = TaskQueue(db)
    for i in range(n):
        await q.enqueue(f"bench {i}", task_type="claude")
    return await q.claim([f"bench:1:{i}" for i in range(n)], task_types=["claude"],
                         lease_seconds=3600)


async def run_overhead(s: Settings, db: Database) -> None:
    with FakeAnthropic() as api, tempfile.TemporaryDirectory() as home:
        work = Path(home) / "work"
        work.mkdir()
        (work / "notes.txt").write_text("42\n")
        api.conversation(tool_use("Read", {"file_path": str(work / "notes.txt")}), text("42"))
        env = {**api.env(), "HOME": home, "CLAUDE_CONFIG_DIR": f"{home}/cfg"}
        executor = ClaudeExecutor(s.claude.model_copy(update={"claude_bin": str(LOCAL_CLAUDE)}), s.database,
                                  env=env, cwd=work, store=PgRunStore(db),
                                  options=ClaudeRunOptions(allowed_tools=("Read",)))
        argv = [str(LOCAL_CLAUDE), "-p", "--output-format", "stream-json", "--verbose",
                "--allowedTools", "Read"]
        tasks = await _claimed(db, RUNS + 1)
        bare_env = executor.environment(tasks[0])  # the very environment the executor gives
        await executor.execute(tasks[-1])  # warm-up (first start, caches)
        bare, wrapped = [], []
        for task in tasks[:-1]:
            t = time.perf_counter()
            await anyio.to_thread.run_sync(lambda: subprocess.run(
                argv, input=b"read the notes", env=bare_env, cwd=work, capture_output=True,
                check=True))
            bare.append(time.perf_counter() - t)
            t = time.perf_counter()
            await executor.execute(task)
            wrapped.append(time.perf_counter() - t)
        events = await PgRunStore(db).events(tasks[0].task_id)
    b, w = statistics.median(bare), statistics.median(wrapped)
    emit("runs", "run_overhead", w * 1000, baseline="bare claude -p stream-json, same fake (ms)",
         baseline_value=b * 1000, overhead_pct=round((w / b - 1) * 100, 2), runs=RUNS,
         events_per_run=len(events), target_pct=2.0)


async def events_written(s: Settings, db: Database) -> None:
    [task] = await _claimed(db, 1)
    store = PgRunStore(db)
    with tempfile.TemporaryDirectory() as tmp:
        recorder = RunRecorder(store, task, config_dir=Path(tmp), cwd=tmp, limit=EVENTS + 10,
                               interval=0.01)
        t = time.perf_counter()
        async with anyio.create_task_group() as tg:
            await tg.start(recorder.run)
            for i in range(EVENTS):
                recorder.add(RunEvent("tool_use", f"Read src/file_{i}.py", i // 3, 0.001 * i))
                if i % 200 == 0:
                    await anyio.sleep(0)  # a stream delivers lines, the writer runs between
            await recorder.close()
            tg.cancel_scope.cancel()
        batched = recorder.written / (time.perf_counter() - t)
    one = 500
    t = time.perf_counter()
    for i in range(one):
        await store.append_events(task, EVENTS + 100 + i, [RunEvent("text", "one by one")])
    single = one / (time.perf_counter() - t)
    emit("runs", "events_written", batched, baseline="guarded one-row INSERT per event (per s)",
         baseline_value=single, events=EVENTS, written=recorder.written)


async def resume_tokens(s: Settings, db: Database) -> None:
    """Stall at the 4th turn; compare what a resumed retry and a fresh one send."""
    def payload(requests: list[Request]) -> int:
        return sum(len(json.dumps(r.body.get("messages"))) for r in requests)

    with tempfile.TemporaryDirectory() as home:
        work = Path(home) / "work"
        work.mkdir()
        for n in range(3):
            (work / f"f{n}.txt").write_text(f"file {n}: " + "data " * 400 + "\n")
        turns = [tool_use("Read", {"file_path": str(work / f"f{n}.txt")}) for n in range(3)]
        sent = {}
        for mode in ("fresh", "resumed"):
            with FakeAnthropic() as api:
                api.conversation(*turns, stall(text("done")))
                env = {"PATH": os.environ["PATH"], **api.env(), "HOME": home,
                       "CLAUDE_CONFIG_DIR": f"{home}/cfg-{mode}"}
                argv = [str(LOCAL_CLAUDE), "-p", "--output-format", "stream-json", "--verbose",
                        "--allowedTools", "Read"]
                first = await anyio.to_thread.run_sync(partial(_until_stalled, argv, env, work))
                before = len(api.session_requests())
                again = argv + (["--resume", first] if mode == "resumed" else [])
                await anyio.to_thread.run_sync(partial(
                    subprocess.run, again, input=b"continue the task", env=env, cwd=work,
                    capture_output=True, timeout=120))
                retry = api.session_requests()[before:]
                sent[mode] = (payload(retry), len(retry))
    emit("runs", "resume_tokens", sent["resumed"][0] / 4,
         baseline="a fresh retry replaying every turn (approx. input tokens)",
         baseline_value=sent["fresh"][0] / 4, resumed_requests=sent["resumed"][1],
         fresh_requests=sent["fresh"][1])


def _until_stalled(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run until the stall (4th turn), kill it; its session id."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                            cwd=cwd, start_new_session=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"read the three files")
    proc.stdin.close()
    session, results = "", 0
    for line in proc.stdout:
        data = json.loads(line)
        session = data.get("session_id") or session
        if data.get("type") == "user":
            results += 1
            if results == 3:
                time.sleep(1.0)  # the stalled request is under way
                break
    os.killpg(proc.pid, 9)
    proc.wait()
    return session


async def main() -> None:
    if not os.access(LOCAL_CLAUDE, os.X_OK):
        print(json.dumps({"bench": "runs", "skipped": f"no CLI at {LOCAL_CLAUDE}"}))
        return
    async with bench_settings("runs", redis=False) as s:
        db = await Database.open(s.database, max_size=4)
        try:
            await run_overhead(s, db)
            await events_written(s, db)
            await resume_tokens(s, db)
        finally:
            await db.close()


if __name__ == "__main__":
    anyio.run(main)
