"""The Postgres store of Claude runs (018, 019): every write is guarded by the attempt,
as the queue's results are; a worker that lost its task writes no event, session or
transcript; sessions link attempts; transcripts come back whole; retention purges."""

from __future__ import annotations

import dataclasses

from echo.db import Database
from echo.org.views import DoingNow
from echo.work import Failure, TaskQueue
from echo.work.runs import PgRunStore, RunEvent


async def test_writes_land_only_for_the_attempt_that_holds_the_task(db: Database) -> None:
    q, store = TaskQueue(db), PgRunStore(db)
    made = await q.enqueue("run", task_type="claude")
    [task] = await q.claim(["w:1:0"], task_types=["claude"])
    assert await store.record_session(task, "s-1", "/w", None)
    assert await store.append_events(task, 1, [RunEvent("init", "session s-1", 0, 0.0),
                                               RunEvent("tool_use", "Read a", 1, 0.01)])
    assert await store.append_transcript(task, "s-1", "-w", 0, b'{"a":1}\n')
    stale = dataclasses.replace(task, worker_id="w:9:0")  # not the owner
    assert not await store.append_events(stale, 3, [RunEvent("text", "from a stranger")])
    assert not await store.record_session(stale, "s-x", "/w", None)
    assert not await store.append_transcript(stale, "s-1", "-w", 8, b'{"b":2}\n')
    rows = await store.events(made.task_id)
    assert [(r["attempt"], r["seq"], r["kind"], r["session_id"]) for r in rows] == [
        (1, 1, "init", "s-1"), (1, 2, "tool_use", "s-1")]
    assert [r["seq"] for r in await store.events(made.task_id, after=(1, 1))] == [2]

    # The attempt fails (a hang); the next attempt finds its session to resume.
    await q.fail([Failure(task, "hung", True)])
    [again] = await q.claim(["w:2:0"], task_types=["claude"])
    prior = await store.previous_session(made.task_id, again.attempt)
    assert prior is not None and (prior.attempt, prior.session_id) == (1, "s-1")
    assert not await store.append_events(task, 3, [RunEvent("text", "the old attempt")])
    assert await store.append_transcript(again, "s-1", "-w", 8, b'{"b":2}\n')
    assert await store.transcript("s-1") == ("-w", b'{"a":1}\n{"b":2}\n')
    assert await store.transcript_end("s-1") == 16
    assert await store.purge(3600) == 0
    assert await store.purge(0) == 4 and await store.transcript("s-1") is None


async def test_what_each_running_task_is_doing_is_its_latest_call(db: Database) -> None:
    q, store = TaskQueue(db), PgRunStore(db)
    await q.enqueue("run", task_type="claude", role="cto")
    [task] = await q.claim(["w:1:0"], task_types=["claude"])
    await store.append_events(task, 1, [RunEvent("tool_use", "Edit src/api.py", 3, 0.12),
                                        RunEvent("tool_result", "ok", 3, 0.12)])
    [now] = [DoingNow.model_validate(r) for r in await store.doing_now()]
    assert now.line == "cto: Edit src/api.py, turn 3, $0.12"
    await q.fail([Failure(task, "stopped", False)])
    assert await store.doing_now() == []  # a task that is not running does nothing
