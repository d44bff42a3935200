"""The work pool on its in-memory adapters (echo.work.pool.memory): the claim loop, the
result writer, the lease keeper, the rescuer and the drain, without Postgres.

The integration tests (tests/integration/work/test_pool.py and the chaos tests) run
the same pool on Postgres; these pin down its own rules, each on one situation a
worker meets: more tasks than slots, a failure, an outage, a refused result, a lost
or unrenewable lease, a dead worker's task, a drain. Every wait is on an event (the
store's `until`, the executor's own events), never a sleep.
"""

from __future__ import annotations

import operator
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from echo.errors import CommandFailed, UsageError
from echo.runtime import Backoff
from echo.slices import WorkSettings
from echo.work.executors import Result
from echo.work.pool import ExecutorPool, PoolStores
from echo.work.pool.memory import Changes, MemoryPresence, MemoryTasks, memory_stores
from echo.work.tasks import Task

NO_WAIT = Backoff(initial=0.0, max=0.0)


class Clock:
    """The store's clock, moved by the test (leases, delays, expiry)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Gate:
    """An executor that holds each run until the test lets it go, or fails it."""

    def __init__(self, fail: Callable[[Task], Exception | None] = lambda t: None) -> None:
        self.fail = fail
        self.running: set[int] = set()
        self.most = 0
        self.ran: list[int] = []
        self.cancelled: list[tuple[int, float, float | None]] = []  # id, clock, lease end
        self.go: dict[int, anyio.Event] = {}
        self.changes = Changes()
        self.until = self.changes.until
        self.store: MemoryTasks | None = None

    def release(self, task_id: int) -> None:
        self.go.setdefault(task_id, anyio.Event()).set()

    async def execute(self, task: Task) -> Result:
        self.running.add(task.task_id)
        self.most = max(self.most, len(self.running))
        self.ran.append(task.task_id)
        self.changes.touch()
        try:
            await self.go.setdefault(task.task_id, anyio.Event()).wait()
        except anyio.get_cancelled_exc_class():
            assert self.store is not None
            row = self.store.rows[task.task_id]
            self.cancelled.append((task.task_id, self.store.clock(), row.lease_until))
            raise
        finally:
            self.running.discard(task.task_id)
            self.changes.touch()
        self.go.pop(task.task_id)  # a second attempt waits again
        error = self.fail(task)
        if error is not None:
            raise error
        return Result({"task": task.task_id, "attempt": task.attempt})


def work_settings(tmp_path: Path, **update: Any) -> WorkSettings:
    """The pool's slice, built here: no environment or TOML file can change it."""
    return WorkSettings(worker_check_interval=0.05, max_task_bytes=64 * 1024, node="unit",
                        state_dir=tmp_path / "state", **update)


@asynccontextmanager
async def running_pool(stores: PoolStores, gate: Gate, tmp_path: Path,
                       **options: Any) -> AsyncIterator[ExecutorPool]:
    assert isinstance(stores.tasks, MemoryTasks)
    gate.store = stores.tasks
    pool = ExecutorPool(work_settings(tmp_path), stores, {"noop": gate}, **options)
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        yield pool
        pool.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stores(clock: Clock) -> PoolStores:
    return memory_stores(clock)


def tasks_of(stores: PoolStores) -> MemoryTasks:
    assert isinstance(stores.tasks, MemoryTasks)
    return stores.tasks


async def test_a_pool_runs_at_most_its_slots_and_completes_each_task_once(
        stores: PoolStores, tmp_path: Path) -> None:
    store, gate = tasks_of(stores), Gate()
    ids = [store.add(f"t{n}") for n in range(5)]
    async with running_pool(stores, gate, tmp_path, concurrency=2) as pool:
        await gate.until(lambda: len(gate.running) == 2)
        assert sorted(r.status for r in store.rows.values()) == ["pending"] * 3 + ["running"] * 2
        assert isinstance(stores.presence, MemoryPresence)
        assert list(stores.presence.serving.values()) == [(None, ("noop",))]
        for task_id in ids:
            await gate.until(partial(operator.contains, gate.running, task_id))
            gate.release(task_id)
        await store.until(lambda: all(r.status == "completed" for r in store.rows.values()))
        assert pool.metrics().succeeded == 5
    assert gate.most == 2
    assert sorted(gate.ran) == ids  # none twice
    assert all(r.history == ["pending", "running", "completed"] for r in store.rows.values())
    assert store.rows[ids[0]].result == {"task": ids[0], "attempt": 1}
    assert stores.presence.serving == {}  # the pool said it is gone


async def test_a_retryable_failure_runs_again_after_its_delay_until_retries_are_used_up(
        stores: PoolStores, clock: Clock, tmp_path: Path) -> None:
    store = tasks_of(stores)
    gate = Gate(fail=lambda t: CommandFailed("exit 3", retryable=True))
    task_id = store.add("flaky", max_retries=1)
    backoff = Backoff(initial=60.0, max=60.0)
    async with running_pool(stores, gate, tmp_path, backoff=backoff) as pool:
        gate.release(task_id)
        await store.until(lambda: store.rows[task_id].history[-1:] == ["pending"]
                          and len(store.rows[task_id].history) == 3)
        row = store.rows[task_id]
        assert (row.retry_count, row.run_after) == (1, clock.now + 60.0)  # its backoff
        assert gate.ran == [task_id]  # not due yet: not run again
        clock.now += 60.0
        pool.wake()
        await gate.until(lambda: gate.ran == [task_id, task_id])
        gate.release(task_id)
        await store.until(lambda: store.status(task_id) == "dead")
    assert store.rows[task_id].history == ["pending", "running", "pending", "running", "dead"]
    assert store.rows[task_id].error == "exit 3"


async def test_a_usage_error_fails_the_task_at_once(stores: PoolStores, tmp_path: Path) -> None:
    store = tasks_of(stores)
    gate = Gate(fail=lambda t: UsageError("no such file: plan.md"))
    task_id = store.add("bad", max_retries=5)
    async with running_pool(stores, gate, tmp_path) as pool:
        gate.release(task_id)
        await store.until(lambda: store.status(task_id) == "failed")
        assert pool.metrics().failed == 1
    assert store.rows[task_id].retry_count == 0


async def test_a_result_finished_during_an_outage_is_kept_and_lands_after_it(
        stores: PoolStores, tmp_path: Path) -> None:
    store, gate = tasks_of(stores), Gate()
    task_id = store.add("during the outage")
    async with running_pool(stores, gate, tmp_path) as pool:
        await gate.until(lambda: task_id in gate.running)
        store.down = True
        gate.release(task_id)
        await store.until(lambda: pool.metrics().degraded)
        assert pool.metrics().unwritten == 1  # finished, held in memory, slot held
        assert pool.metrics().available_slots == 3
        assert store.status(task_id) == "running"
        store.down = False
        await store.until(lambda: store.status(task_id) == "completed")
        assert not pool.metrics().degraded
        assert pool.metrics().succeeded == 1 and pool.metrics().unwritten == 0
    assert store.rows[task_id].history == ["pending", "running", "completed"]


async def test_a_result_the_store_refuses_fails_its_own_task_only(
        stores: PoolStores, tmp_path: Path) -> None:
    store, gate = tasks_of(stores), Gate()
    bad, good = store.add("bad result"), store.add("good result")
    store.refuse.add(bad)
    async with running_pool(stores, gate, tmp_path, concurrency=2):
        await gate.until(lambda: gate.running == {bad, good})
        gate.release(bad)
        gate.release(good)
        await store.until(lambda: {store.status(bad), store.status(good)} <= {"completed", "failed"}
                          and "running" not in (store.status(bad), store.status(good)))
    assert store.status(good) == "completed"
    assert store.status(bad) == "failed"
    assert (store.rows[bad].error or "").startswith("result not storable: ")


async def test_a_task_cancelled_by_a_user_stops_its_run_and_frees_its_slot(
        stores: PoolStores, tmp_path: Path) -> None:
    store, gate = tasks_of(stores), Gate()
    task_id = store.add("long")
    async with running_pool(stores, gate, tmp_path, concurrency=1, lease_seconds=0.3) as pool:
        await gate.until(lambda: task_id in gate.running)
        store.cancel(task_id)
        await gate.until(lambda: bool(gate.cancelled))  # the next renewal said: not ours
        nxt = store.add("next")
        await gate.until(lambda: nxt in gate.running)  # the slot is free again
        assert pool.metrics().lost == 1
        gate.release(nxt)
        await store.until(lambda: store.status(nxt) == "completed")
    assert store.status(task_id) == "cancelled"


async def test_a_run_whose_lease_cannot_be_renewed_stops_before_its_lease_ends(
        stores: PoolStores, tmp_path: Path) -> None:
    store = tasks_of(stores)
    store.clock = anyio.current_time  # the store's lease and the pool's on one clock
    gate = Gate()
    task_id = store.add("partitioned")
    async with running_pool(stores, gate, tmp_path, concurrency=1, lease_seconds=0.4) as pool:
        await gate.until(lambda: task_id in gate.running)
        store.down = True  # no renewal lands from now on
        await gate.until(lambda: bool(gate.cancelled))
        store.down = False
        assert pool.metrics().lost == 1
    (_, stopped_at, lease_end), = gate.cancelled
    assert lease_end is not None and stopped_at < lease_end  # over before another may claim it
    assert store.status(task_id) == "running"  # left for the rescue; nothing was written


async def test_a_dead_workers_task_is_rescued_and_run_here(
        stores: PoolStores, clock: Clock, tmp_path: Path) -> None:
    store, gate = tasks_of(stores), Gate()
    task_id = store.add("orphan")
    row = store.rows[task_id]
    row.set("running")
    row.worker, row.attempt, row.lease_until = "gone:1:0", 1, clock.now - 1  # its lease expired
    async with running_pool(stores, gate, tmp_path, backoff=NO_WAIT):
        await gate.until(lambda: task_id in gate.running)
        gate.release(task_id)
        await store.until(lambda: store.status(task_id) == "completed")
    assert row.history == ["pending", "running", "pending", "running", "completed"]
    assert row.retry_count == 1 and row.attempt == 2
    assert row.result == {"task": task_id, "attempt": 2}


async def test_a_drain_gives_unfinished_work_back_uncounted(
        stores: PoolStores, tmp_path: Path) -> None:
    store, gate = tasks_of(stores), Gate()
    task_id = store.add("unfinished")
    async with running_pool(stores, gate, tmp_path, grace_seconds=0.05) as pool:
        await gate.until(lambda: task_id in gate.running)
    assert [c[0] for c in gate.cancelled] == [task_id]
    assert store.rows[task_id].history == ["pending", "running", "pending"]
    assert store.rows[task_id].retry_count == 0
    assert pool.metrics().released == 1


def test_a_pool_that_runs_no_claude_task_claims_without_the_governors_gate(
        stores: PoolStores, tmp_path: Path) -> None:
    settings = work_settings(tmp_path)
    assert ExecutorPool(settings, stores, {"noop": Gate()}).gate.governed == ()
    assert ExecutorPool(settings, stores, {"noop": Gate(), "claude": Gate()}).gate.governed == (
        "claude",)
