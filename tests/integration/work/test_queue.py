"""TaskQueue against the real Postgres: state changes, guards, audit, NOTIFY."""

from __future__ import annotations

import anyio
import pytest

from echo.config import Settings
from echo.db import Database
from echo.errors import NotFound, UsageError
from echo.listener import Listener
from echo.runtime import Backoff
from echo.work import Completion, Failure, NewTask, TaskQueue

FAST = Backoff(initial=0.01, max=0.05)


async def actions(db: Database, task_id: int) -> list[str]:
    return [h["action"] for h in await TaskQueue(db).history(task_id)]


async def test_enqueue_claim_complete_writes_one_audit_row_per_change(db: Database) -> None:
    q = TaskQueue(db)
    made = await q.enqueue("say hi", task_type="noop", role="cto", payload={"x": 1})
    assert made.created
    [task] = await q.claim(["h:1:0", "h:1:1"], roles=["cto"], lease_seconds=30)
    assert (task.task_id, task.worker_id, task.attempt, task.payload) == (
        made.task_id, "h:1:0", 1, {"x": 1})
    assert await q.complete([Completion(task, {"answer": 42}, 0.0125, "sess")]) == {task.task_id}
    row = await q.get(task.task_id)
    assert row["status"] == "completed" and row["result"] == {"answer": 42}
    assert float(row["cost_usd"]) == 0.0125 and row["session_id"] == "sess"
    assert row["duration_sec"] is not None and row["completed_at"] is not None
    assert await actions(db, task.task_id) == ["task.enqueued", "task.claimed", "task.completed"]


async def test_complete_and_claim_is_one_statement_with_every_audit_row(db: Database) -> None:
    q = TaskQueue(db)
    first, second, third, fourth = await q.enqueue_many(
        [NewTask(f"t{i}", task_type="noop") for i in range(4)])
    a, b = await q.claim(["h:1:0", "h:1:1"])
    # `b` lost its lease meanwhile (a user cancelled it): its result must not land.
    assert await q.cancel(b.task_id) == "running"
    # Slot 0 is freed by `a` and claimed again in the same statement.
    applied, claimed = await q.complete_and_claim(
        [Completion(a, {"n": 1}), Completion(b, {"n": 2})], ["h:1:0", "h:1:2"],
        task_types=["noop"])
    assert applied == {a.task_id}
    assert [(t.task_id, t.worker_id, t.attempt) for t in claimed] == [
        (third.task_id, "h:1:0", 1), (fourth.task_id, "h:1:2", 1)]
    assert (await q.get(a.task_id))["result"] == {"n": 1}
    assert (await q.get(b.task_id))["status"] == "cancelled"
    assert await actions(db, first.task_id) == ["task.enqueued", "task.claimed", "task.completed"]
    assert await actions(db, second.task_id) == ["task.enqueued", "task.claimed", "task.cancelled"]
    for task in claimed:
        assert await actions(db, task.task_id) == ["task.enqueued", "task.claimed"]
    # Nothing to claim: the results still land.
    applied, claimed = await q.complete_and_claim(
        [Completion(t, "ok") for t in claimed], ["h:1:0"], task_types=["noop"])
    assert applied == {third.task_id, fourth.task_id} and claimed == []
    assert (await q.counts())["completed"] == 3


async def test_claim_respects_priority_roles_types_run_after_and_capacity(db: Database) -> None:
    q = TaskQueue(db)
    low = await q.enqueue("low", task_type="noop", priority=0)
    high = await q.enqueue("high", task_type="noop", priority=5)
    await q.enqueue("later", task_type="noop", priority=9, delay=60)
    await q.enqueue("cto's", task_type="noop", role="cto", priority=9)
    await q.enqueue("a command", task_type="command", priority=9)
    got = await q.claim(["w:0", "w:1"], task_types=["noop"], roles=["cto"])
    assert [t.description for t in got] == ["cto's"]  # only its role's tasks
    got = await q.claim(["w:0"], task_types=["noop"], roles=None)
    assert [t.task_id for t in got] == [high.task_id]  # priority first
    got = await q.claim(["w:0", "w:1", "w:2"], task_types=["noop"], roles=None)
    assert [t.task_id for t in got] == [low.task_id]  # delayed and other types skipped


async def test_dedupe_key_is_unique_among_live_tasks_only(db: Database) -> None:
    q = TaskQueue(db)
    first, again, other = await q.enqueue_many([
        NewTask("a", task_type="noop", dedupe_key="k"),
        NewTask("a again", task_type="noop", dedupe_key="k"),
        NewTask("b", task_type="noop"),
    ])
    assert first.created and not again.created and other.created
    assert again.task_id == first.task_id
    [task] = await q.claim(["w:0"], task_types=["noop"])
    await q.complete([Completion(task, None)])
    if task.task_id != first.task_id:  # finish the keyed one too
        [task] = await q.claim(["w:0"], task_types=["noop"])
        await q.complete([Completion(task, None)])
    fresh = await q.enqueue("a later", task_type="noop", dedupe_key="k")
    assert fresh.created and fresh.task_id != first.task_id


async def test_a_worker_that_lost_its_lease_cannot_complete(db: Database) -> None:
    q = TaskQueue(db)
    made = await q.enqueue("x", task_type="noop")
    [old] = await q.claim(["a:1:0"], lease_seconds=0.01)
    await anyio.sleep(0.05)  # let the lease run out (a time condition, not synchronisation)
    assert await q.rescue(actor="b:2:rescue", backoff=Backoff(initial=0.0, max=0.0)) == {
        made.task_id: "pending"}
    [new] = await q.claim(["b:2:0"])
    assert new.attempt == old.attempt + 1
    assert await q.complete([Completion(old, "late")]) == set()
    assert await q.heartbeat([old], 30) == set()
    assert await q.heartbeat([new], 30) == {new.task_id}
    assert await q.complete([Completion(new, "mine")]) == {new.task_id}
    row = await q.get(made.task_id)
    assert (row["result"], row["retry_count"], row["assigned_worker_id"]) == ("mine", 1, "b:2:0")
    assert await actions(db, made.task_id) == [
        "task.enqueued", "task.claimed", "task.retry_scheduled", "task.claimed", "task.completed"]
    history = await q.history(made.task_id)
    assert history[2]["actor"] == "b:2:rescue" and "lease expired" in history[2]["details"]["error"]


async def test_retryable_failures_back_off_then_die_and_can_be_requeued(db: Database) -> None:
    q = TaskQueue(db)
    made = await q.enqueue("flaky", task_type="noop", max_retries=1)
    [t] = await q.claim(["w:0"])
    assert await q.fail([Failure(t, "429", True, delay=0.0)]) == {made.task_id: "pending"}
    [t] = await q.claim(["w:0"])
    assert t.retry_count == 1
    assert await q.fail([Failure(t, "529", True)]) == {made.task_id: "dead"}
    await q.requeue(made.task_id)
    [t] = await q.claim(["w:0"])
    assert t.retry_count == 0
    assert await q.fail([Failure(t, "bad key", False)]) == {made.task_id: "failed"}
    assert (await q.get(made.task_id))["error"] == "bad key"
    assert await actions(db, made.task_id) == [
        "task.enqueued", "task.claimed", "task.retry_scheduled", "task.claimed", "task.dead",
        "task.requeued", "task.claimed", "task.failed"]


async def test_a_delayed_retry_is_not_claimed_before_its_time(db: Database) -> None:
    q = TaskQueue(db)
    made = await q.enqueue("x", task_type="noop")
    [t] = await q.claim(["w:0"])
    await q.fail([Failure(t, "usage limit", True, delay=3600, counted=False)])
    assert await q.claim(["w:0"]) == []
    row = await q.get(made.task_id)
    assert row["status"] == "pending" and row["retry_count"] == 0


async def test_cancel_and_requeue_errors_are_one_clear_line(db: Database) -> None:
    q = TaskQueue(db)
    made = await q.enqueue("x", task_type="noop")
    assert await q.cancel(made.task_id) == "pending"
    with pytest.raises(UsageError, match="already cancelled"):
        await q.cancel(made.task_id)
    with pytest.raises(NotFound):
        await q.cancel(10**9)
    with pytest.raises(NotFound):
        await q.requeue(10**9)
    other = await q.enqueue("y", task_type="noop")
    with pytest.raises(UsageError, match="only failed"):
        await q.requeue(other.task_id)
    with pytest.raises(UsageError, match="unknown task type"):
        await q.enqueue("z", task_type="shell")
    history = await q.history(made.task_id)
    assert history[-1]["action"] == "task.cancelled" and history[-1]["actor"] == "cli"


async def test_enqueue_and_cancel_of_running_task_notify(settings: Settings, db: Database) -> None:
    listener = Listener(settings.database)
    got: list[str] = []
    arrived = anyio.Event()

    def on(payload: str) -> None:
        got.append(payload)
        if payload.startswith("cancel:"):
            arrived.set()

    await listener.listen("tasks", on)
    async with anyio.create_task_group() as tg:
        await tg.start(listener.run)
        q = TaskQueue(db)
        made = await q.enqueue("x", task_type="noop")
        await q.claim(["w:0"])
        await q.cancel(made.task_id)
        with anyio.fail_after(5):
            await arrived.wait()
        tg.cancel_scope.cancel()
    assert got == ["new", f"cancel:{made.task_id}"]


async def test_rescue_delays_mirror_backoff_delay(db: Database) -> None:
    """The rescue statement draws each row's delay from the Backoff's numbers with the
    same formula as `Backoff.delay`: min(max, initial * factor**n) * (1 - jitter * u)."""
    q = TaskQueue(db)
    for jitter, (lo, hi) in ((0.0, (90.0, 90.0)), (0.5, (45.0, 90.0))):
        made = await q.enqueue("x", task_type="noop", max_retries=5)
        await q.claim(["a:1:0"])
        async with db.acquire() as conn:  # two retries used, lease run out
            await conn.execute("UPDATE agent_tasks SET retry_count = 2, "
                               "lease_expires_at = now() - interval '1 s' WHERE task_id = $1",
                               made.task_id)
        backoff = Backoff(initial=10.0, factor=3.0, max=1000.0, jitter=jitter)
        assert backoff.ceiling(2) == 90.0
        assert await q.rescue(actor="r", backoff=backoff) == {made.task_id: "pending"}
        async with db.acquire() as conn:
            wait = await conn.fetchval("SELECT extract(epoch FROM run_after - now()) "
                                       "FROM agent_tasks WHERE task_id = $1", made.task_id)
        assert lo - 1 <= float(wait) <= hi, (jitter, wait)
    capped = Backoff(initial=10.0, factor=3.0, max=20.0)
    made = await q.enqueue("y", task_type="noop", max_retries=5)
    await q.claim(["a:1:0"])
    async with db.acquire() as conn:
        await conn.execute("UPDATE agent_tasks SET retry_count = 4, "
                           "lease_expires_at = now() - interval '1 s' WHERE task_id = $1",
                           made.task_id)
    await q.rescue(actor="r", backoff=capped)
    async with db.acquire() as conn:
        wait = await conn.fetchval("SELECT extract(epoch FROM run_after - now()) "
                                   "FROM agent_tasks WHERE task_id = $1", made.task_id)
    assert 19 <= float(wait) <= 20


async def test_a_claim_that_finds_nothing_does_not_wake_the_console(
    settings: Settings, db: Database
) -> None:
    """An idle pool's poll stores no result and claims nothing: it must not send the
    console's `events` NOTIFY (013), which wakes the console to read no audit row. The
    enqueue after it writes one and sends exactly one."""
    from echo import db as dbmod

    conn = await dbmod.connect(settings.database)
    got: list[str] = []
    arrived = anyio.Event()

    def on_notify(_c: object, _pid: int, _channel: str, payload: str) -> None:
        got.append(payload)
        arrived.set()

    try:
        await conn.add_listener(f"{settings.namespace}:events", on_notify)
        q = TaskQueue(db)
        assert await q.claim(["h:1:0"], task_types=["noop"]) == []  # nothing pending
        assert await q.complete([]) == set()
        await q.enqueue("after the empty claims", task_type="noop")
        with anyio.fail_after(5):
            await arrived.wait()
        await conn.execute("SELECT 1")  # a round trip: anything sent before is in
        assert got == ["new"]
    finally:
        await conn.close()
