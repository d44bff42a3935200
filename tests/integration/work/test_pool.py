"""ExecutorPool against the real Postgres: capacity, wake-ups, cancel, drain, leaks."""

from __future__ import annotations

import logging

import anyio
import pytest

from echo import db as dbmod
from echo.config import Settings
from echo.db import Database
from echo.listener import Listener
from echo.runtime import Backoff
from echo.work import ExecutorPool, NewTask, NoopExecutor, Result, Task, TaskQueue
from tests.helpers import wait_until

FAST = Backoff(initial=0.01, max=0.05)


async def statuses(q: TaskQueue) -> dict[str, int]:
    return {k: v for k, v in (await q.counts()).items() if v}


class Gate:
    """An executor that records concurrency and blocks until released."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.started = 0
        self.release = anyio.Event()

    async def execute(self, task: Task) -> Result:
        self.running += 1
        self.started += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return Result({"done": task.task_id})


async def test_pool_runs_tasks_within_its_capacity_and_reports_metrics(
    settings: Settings, db: Database
) -> None:
    q = TaskQueue(db)
    await q.enqueue_many([NewTask(f"t{i}", task_type="noop") for i in range(10)])
    gate = Gate()
    pool = ExecutorPool(settings.work, db, {"noop": gate}, concurrency=3, backoff=FAST)
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        await wait_until(lambda: gate.running == 3)
        m = pool.metrics()
        assert (m.pool_size, m.active, m.available_slots) == (3, 3, 0)
        assert (await statuses(q)) == {"pending": 7, "running": 3}
        gate.release.set()
        await wait_until(lambda: pool.metrics().total_processed == 10)
        pool.stop()
    m = pool.metrics()
    assert gate.peak == 3
    assert (m.succeeded, m.failed, m.success_rate, m.active) == (10, 0, 1.0, 0)
    assert m.avg_duration_ms >= 0
    assert (await statuses(q)) == {"completed": 10}


async def test_notify_wakes_an_idle_pool_long_before_its_poll(
    settings: Settings, db: Database
) -> None:
    slow_poll = settings.model_copy(update={"worker_check_interval": 30.0})
    listener = Listener(slow_poll.database)
    pool = ExecutorPool(slow_poll.work, db, {"noop": NoopExecutor()}, listener=listener)
    q = TaskQueue(db)
    async with anyio.create_task_group() as tg:
        await tg.start(listener.run)
        await tg.start(pool.run)
        # Idle: its first claim found nothing, and its next poll is 30 s away.
        await wait_until(lambda: pool.metrics().claim_rounds >= 1 and listener.connected)
        await q.enqueue("wake up", task_type="noop")
        # Only the NOTIFY can bring the task in before the 30 s poll would.
        await wait_until(lambda: pool.metrics().total_processed == 1, timeout=10)
        pool.stop()
        tg.cancel_scope.cancel()


async def test_an_idle_pool_sleeps_until_a_delayed_task_comes_due_not_until_its_poll(
    settings: Settings, db: Database
) -> None:
    """No NOTIFY says when a delayed task becomes due: the idle pool asks when the next
    one is due and sleeps that long, instead of polling every second (or, idle, far
    less often)."""
    slow_poll = settings.model_copy(update={"worker_check_interval": 30.0})
    listener = Listener(slow_poll.database)
    pool = ExecutorPool(slow_poll.work, db, {"noop": NoopExecutor()}, listener=listener)
    q = TaskQueue(db)
    async with anyio.create_task_group() as tg:
        await tg.start(listener.run)
        await tg.start(pool.run)
        await wait_until(lambda: pool.metrics().claim_rounds >= 1 and listener.connected)
        # Its NOTIFY wakes the pool before the task is due; the claim then finds nothing.
        await q.enqueue_many([NewTask("later", task_type="noop", delay=0.5)])
        await wait_until(lambda: pool.metrics().total_processed == 1, timeout=10)
        pool.stop()
        tg.cancel_scope.cancel()


async def test_cancelling_a_running_task_stops_its_work(settings: Settings, db: Database) -> None:
    listener = Listener(settings.database)
    gate = Gate()
    pool = ExecutorPool(settings.work, db, {"noop": gate}, listener=listener, lease_seconds=30)
    q = TaskQueue(db)
    made = await q.enqueue("long", task_type="noop")
    async with anyio.create_task_group() as tg:
        await tg.start(listener.run)
        await tg.start(pool.run)
        await wait_until(lambda: gate.running == 1)
        assert await q.cancel(made.task_id) == "running"
        await wait_until(lambda: gate.running == 0 and pool.metrics().active == 0, timeout=5)
        pool.stop()
        tg.cancel_scope.cancel()
    row = await q.get(made.task_id)
    assert row["status"] == "cancelled" and row["result"] is None


async def test_drain_finishes_quick_work_and_releases_the_rest(
    settings: Settings, db: Database
) -> None:
    q = TaskQueue(db)
    quick = await q.enqueue("quick", task_type="noop", payload={"sleep": 0.2}, priority=1)
    slow = await q.enqueue("slow", task_type="noop", payload={"sleep": 60})
    pool = ExecutorPool(settings.work, db, {"noop": NoopExecutor()}, concurrency=2,
                        grace_seconds=1.0)
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        await wait_until(lambda: pool.metrics().active == 2)
        pool.stop()
    assert (await q.get(quick.task_id))["status"] == "completed"
    row = await q.get(slow.task_id)
    assert (row["status"], row["retry_count"], row["assigned_worker_id"]) == ("pending", 0, None)
    assert [h["action"] for h in await q.history(slow.task_id)][-1] == "task.released"
    assert pool.metrics().released == 1


async def test_cancelling_run_releases_what_it_holds(settings: Settings, db: Database) -> None:
    q = TaskQueue(db)
    made = await q.enqueue("held", task_type="noop", payload={"sleep": 60})
    pool = ExecutorPool(settings.work, db, {"noop": NoopExecutor()})
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        await wait_until(lambda: pool.metrics().active == 1)
        tg.cancel_scope.cancel()
    assert (await q.get(made.task_id))["status"] == "pending"


async def test_failures_are_classified_and_retried_with_backoff(
    settings: Settings, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    from echo.errors import ClaudeAuthError

    caplog.set_level(logging.INFO, logger="echo.work.pool")

    class Flaky:
        calls = 0

        async def execute(self, task: Task) -> Result:
            Flaky.calls += 1
            if task.description == "auth":
                raise ClaudeAuthError("not logged in")
            if task.retry_count < 2:
                raise RuntimeError("boom")
            return Result("third time lucky")

    q = TaskQueue(db)
    auth = await q.enqueue("auth", task_type="noop")
    flaky = await q.enqueue("flaky", task_type="noop", max_retries=3)
    pool = ExecutorPool(settings.work, db, {"noop": Flaky()}, backoff=FAST)
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        await wait_until(lambda: pool.metrics().total_processed == 4)
        pool.stop()
    assert (await q.get(auth.task_id))["status"] == "failed"
    row = await q.get(flaky.task_id)
    assert (row["status"], row["retry_count"], row["result"]) == ("completed", 2, "third time lucky")
    m = pool.metrics()
    assert (m.succeeded, m.failed) == (1, 3) and Flaky.calls == 4
    # One log line per outcome, with the task as a field (what `echoctl logs --task` filters on).
    outcomes = [(r.fields["task"], r.fields["outcome"]) for r in caplog.records if hasattr(r, "fields")]
    assert outcomes.count((auth.task_id, "failed")) == 1
    assert [o for t, o in outcomes if t == flaky.task_id] == ["retrying", "retrying", "completed"]


async def test_no_claim_is_lost_to_an_uncommitted_transaction(
    settings: Settings, db: Database
) -> None:
    """The bug that cost the original system 7.5 hours: claims made inside a pooled
    connection's transaction that was never committed, invisible to others and stuck.
    Claims must be committed before a worker sees them, and a connection never goes
    back to the pool inside a transaction (the `db` fixture fails the test if one does)."""
    q = TaskQueue(db)
    await q.enqueue_many([NewTask(f"t{i}", task_type="noop") for i in range(300)])
    one_conn = await Database.open(settings.database, max_size=1)  # every claim shares one connection
    try:
        claimed = await TaskQueue(one_conn).claim([f"w:{i}" for i in range(50)],
                                                  lease_seconds=0.5)
        async with dbmod.connection(settings.database) as observer:  # another session sees them at once
            running = await observer.fetchval(
                "SELECT count(*) FROM agent_tasks WHERE status = 'running'")
            assert running == len(claimed) == 50
            async with one_conn.acquire() as conn:
                assert not conn.is_in_transaction()
                pid = await conn.fetchval("SELECT pg_backend_pid()")
            state = await observer.fetchval(
                "SELECT state FROM pg_stat_activity WHERE pid = $1", pid)
            assert state == "idle"
        pool = ExecutorPool(settings.work, one_conn, {"noop": NoopExecutor()}, concurrency=16,
                            backoff=FAST, lease_seconds=2.0)
        async with anyio.create_task_group() as tg:
            await tg.start(pool.run)
            # the 50 claimed above belong to no live worker: rescue brings them back
            await wait_until(lambda: _all_completed(q, 300), timeout=30)
            pool.stop()
        assert one_conn.leaks == 0
    finally:
        await one_conn.close()

    # And the failure mode itself: a claim left in an open transaction is rolled back
    # when the connection is released (counted as a leak), so the task is not stuck.
    leaky = await Database.open(settings.database, max_size=1)
    try:
        made = await q.enqueue("victim", task_type="noop")
        async with leaky.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("UPDATE agent_tasks SET status = 'running', assigned_worker_id = 'bug:1:0' "
                               "WHERE task_id = $1",
                               made.task_id)
        assert leaky.leaks == 1
        [task] = await q.claim(["w:0"])
        assert task.task_id == made.task_id
    finally:
        await leaky.close()


async def _all_completed(q: TaskQueue, n: int) -> bool:
    return (await q.counts())["completed"] == n
