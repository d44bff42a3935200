"""echo.work.runs on in-memory adapters: the stream parser, the loop detector, the
recorder's bound and guard, the transcript mirror and restore, and the watchdog on
small real child processes (a stall, a run that lingers after its result)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from echo.work.runs import MemoryRunStore, RunEvent, RunRecorder, StreamState, Watch, restore
from echo.work.runs.sessions import TranscriptMirror, project_name, transcript_path
from echo.work.runs.store import _join
from echo.work.runs.stream import estimate_cost, tool_summary
from echo.work.runs.watch import run_streaming
from echo.work.tasks import Task

pytestmark = pytest.mark.anyio


def _task(attempt: int = 1, worker: str = "h:1:0") -> Task:
    return Task(7, "claude", "d", 0, "cto", worker, attempt, 30, 3, 0, {}, datetime.now(UTC))


def _line(data: dict[str, object]) -> bytes:
    return json.dumps(data).encode()


INIT = _line({"type": "system", "subtype": "init", "session_id": "s-1", "model": "claude-sonnet-5",
              "cwd": "/w"})


def _call(name: str, tool_input: dict[str, object], ident: str) -> bytes:
    return _line({"type": "assistant", "message": {
        "id": ident, "model": "claude-sonnet-5",
        "usage": {"input_tokens": 100_000, "output_tokens": 10_000},
        "content": [{"type": "tool_use", "name": name, "input": tool_input}]}})


def test_the_stream_gives_session_turns_tools_results_and_cost() -> None:
    state = StreamState()
    [init] = state.feed(INIT)
    assert (init.kind, init.session_id, state.session_id) == ("init", "s-1", "s-1")
    [call] = state.feed(_call("Edit", {"file_path": "src/api.py", "old_string": "x"}, "m1"))
    assert (call.kind, call.summary, call.turn) == ("tool_use", "Edit src/api.py", 1)
    assert call.cost_usd == pytest.approx(estimate_cost("sonnet", 100_000, 10_000))
    [res] = state.feed(_line({"type": "user", "message": {"content": [
        {"type": "tool_result", "content": [{"type": "text", "text": "y" * 500}],
         "is_error": True}]}}))
    assert res.kind == "tool_result" and res.summary.startswith("error: yyy")
    assert len(res.summary) <= 200
    [done] = state.feed(_line({"type": "result", "subtype": "success", "is_error": False,
                               "num_turns": 2, "total_cost_usd": 0.42, "result": "fine"}))
    assert (done.kind, done.turn, done.cost_usd) == ("result", 2, 0.42)
    assert state.result is not None and state.feed(b"not json") == []


def test_a_refused_rate_limit_event_gives_the_exact_reset() -> None:
    # What the 2.1.197 CLI streams before a subscriber's usage-limit result: the 429's
    # `anthropic-ratelimit-unified-reset` to the second (the result's text has only the minute).
    state = StreamState()
    info = {"status": "allowed_warning", "resetsAt": 1796351253, "rateLimitType": "five_hour"}
    assert state.feed(_line({"type": "rate_limit_event", "rate_limit_info": info})) == []
    assert state.limit_resets_at is None  # a warning is no refusal
    state.feed(_line({"type": "rate_limit_event", "rate_limit_info": {**info, "status": "rejected"}}))
    assert state.limit_resets_at == datetime.fromtimestamp(1796351253, UTC)
    state.feed(_line({"type": "rate_limit_event", "rate_limit_info": {"status": "rejected",
                                                                      "resetsAt": "soon"}}))
    assert state.limit_resets_at == datetime.fromtimestamp(1796351253, UTC)  # unreadable: kept


def test_the_same_call_n_times_in_a_row_is_a_loop_and_another_call_resets_it() -> None:
    state = StreamState(loop_repeats=3)
    state.feed(_call("Read", {"file_path": "a"}, "m1"))
    state.feed(_call("Read", {"file_path": "a"}, "m2"))
    state.feed(_call("Read", {"file_path": "b"}, "m3"))  # a different input: not the same call
    state.feed(_call("Read", {"file_path": "b"}, "m4"))
    assert state.looping is None
    state.feed(_call("Read", {"file_path": "b"}, "m5"))
    assert state.looping == "Read b" and state.turn == 5


def test_a_tool_summary_names_its_subject() -> None:
    assert tool_summary("Bash", {"command": "git status", "timeout": 5}) == "Bash git status"
    assert tool_summary("TodoWrite", {}) == "TodoWrite"
    assert tool_summary("X", {"n": 1}) == 'X {"n": 1}'


async def test_the_recorder_keeps_at_most_its_bound_and_always_the_result(tmp_path: Path) -> None:
    store = MemoryRunStore()
    recorder = RunRecorder(store, _task(), config_dir=tmp_path, cwd=tmp_path, limit=4)
    for n in range(10):
        recorder.add(RunEvent("text", f"t{n}"))
    recorder.add(RunEvent("result", "success"))
    await recorder.close()
    assert [r["summary"] for r in store.rows] == ["t0", "t1", "t2", "success"]
    assert [r["seq"] for r in store.rows] == [1, 2, 3, 4] and recorder.dropped == 7


async def test_a_recorder_that_lost_its_attempt_writes_nothing(tmp_path: Path) -> None:
    store = MemoryRunStore(owner={7: ("h:2:0", 2)})  # another worker holds attempt 2
    recorder = RunRecorder(store, _task(attempt=1), config_dir=tmp_path, cwd=tmp_path)
    recorder.add(RunEvent("init", "session s-1", 0, 0.0, "s-1"))
    recorder.add(RunEvent("text", "hello"))
    await recorder.close()
    assert recorder.lost and store.rows == [] and store.sessions == {}


async def test_the_mirror_sends_whole_lines_and_restore_rebuilds_them_elsewhere(
    tmp_path: Path,
) -> None:
    store = MemoryRunStore()
    cwd = tmp_path / "my_work.dir"
    cwd.mkdir()
    path = transcript_path(tmp_path / "a", cwd, "s-1")
    assert path.parent.name == project_name(cwd) and "_" not in path.parent.name
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"n":1}\n{"n":2')  # the second line is still being written
    mirror = TranscriptMirror(store, _task(), tmp_path / "a", cwd)
    mirror.session_id = "s-1"
    assert await mirror.sync() and mirror.sent == 8
    path.write_bytes(b'{"n":1}\n{"n":2}\n{"n":3}\n')
    assert await mirror.sync()
    assert await restore(store, tmp_path / "b", cwd, "s-1") is None
    assert transcript_path(tmp_path / "b", cwd, "s-1").read_bytes() == path.read_bytes()
    assert await restore(store, tmp_path / "c", cwd, "gone") == "its transcript is gone"


def test_ranges_join_skipping_overlaps_and_stopping_at_a_gap() -> None:
    assert _join([(0, b"abc"), (2, b"cde"), (5, b"f"), (9, b"z")]) == b"abcdef"


async def _streamed(script: str, watch: Watch) -> tuple[str | None, int, list[RunEvent]]:
    events: list[RunEvent] = []
    streamed = await run_streaming([sys.executable, "-c", script], stdin=b"", env=None,
                                   cwd=None, time_limit=60, kill_grace=1, watch=watch,
                                   on_event=events.append)
    return streamed.stopped, streamed.done.returncode, events


async def test_the_watchdog_kills_a_run_that_goes_silent() -> None:
    script = f"import sys, time; print({INIT.decode()!r}, flush=True); time.sleep(120)"
    stopped, code, events = await _streamed(script, Watch(idle_timeout=1.0))
    assert stopped == "hung" and code < 0 and [e.kind for e in events] == ["init"]


async def test_a_run_lingering_after_its_result_is_counted_by_it() -> None:
    result = json.dumps({"type": "result", "subtype": "success", "is_error": False,
                         "result": "ok", "total_cost_usd": 0.1})
    script = f"import time; print({result!r}, flush=True); time.sleep(120)"
    stopped, code, _ = await _streamed(script, Watch(idle_timeout=60, result_grace=0.5))
    assert stopped == "lingered" and code == 0


async def test_a_run_that_exits_is_not_stopped() -> None:
    with anyio.fail_after(60):
        stopped, code, events = await _streamed(f"print({INIT.decode()!r})", Watch())
    assert stopped is None and code == 0 and len(events) == 1


class _SlowStore(MemoryRunStore):
    async def append_events(self, task: Task, first_seq: int, events: list[RunEvent]) -> bool:
        await anyio.sleep(0.01)  # a round trip: another flush may start meanwhile
        return await super().append_events(task, first_seq, events)


async def test_a_batch_under_way_and_the_last_one_write_every_event_once(tmp_path: Path) -> None:
    store = _SlowStore()
    recorder = RunRecorder(store, _task(), config_dir=tmp_path, cwd=tmp_path, interval=0)
    async with anyio.create_task_group() as tg:
        await tg.start(recorder.run)
        for n in range(50):
            recorder.add(RunEvent("text", f"t{n}"))
            await anyio.sleep(0)
        await recorder.close()
        tg.cancel_scope.cancel()
    assert [r["summary"] for r in store.rows] == [f"t{n}" for n in range(50)]
    assert recorder.written == 50
