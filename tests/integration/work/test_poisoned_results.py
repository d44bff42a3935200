"""A result Postgres cannot store fails that one task, and the worker goes on (issue 15,
bug 1: a task printing a NUL byte stalled its worker forever, `cannot claim tasks`)."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import pytest

from echo.config import Settings
from echo.db import Database
from echo.work import ExecutorPool, NewTask, Result, Task, TaskQueue
from tests.helpers import run_cli, wait_until
from tests.integration.work.test_workers import Workers, workers  # noqa: F401 - fixture


async def test_a_nul_byte_result_fails_its_task_and_the_worker_goes_on(
    settings: Settings, db: Database, workers: Workers  # noqa: F811 - fixture
) -> None:
    made = await run_cli(settings, "tasks", "submit", "printf 'a\\000b'", "--type", "command",
                         "--json")
    assert made.returncode == 0, made.stderr
    poisoned = json.loads(made.stdout)["task_id"]
    workers.start("--executor", "command", "--concurrency", "1")
    await workers.ready(0)
    q = TaskQueue(db)

    async def settled(task_id: int) -> bool:
        return (await q.get(task_id))["status"] in ("completed", "failed")

    await wait_until(lambda: settled(poisoned), timeout=30, interval=0.1)
    # The worker still claims: a task submitted afterwards runs.
    made = await run_cli(settings, "tasks", "submit", "echo next", "--type", "command", "--json")
    after = json.loads(made.stdout)["task_id"]
    await wait_until(lambda: settled(after), timeout=30, interval=0.1)

    bad, good = await q.get(poisoned), await q.get(after)
    assert bad["status"] == "failed" and bad["error"] == "result not storable: NUL byte", bad
    assert bad["retry_count"] == 0  # permanent: never retried blindly
    assert good["status"] == "completed" and good["result"]["stdout"] == "next\n", good
    shown = await run_cli(settings, "tasks", "show", str(poisoned))
    assert "result not storable: NUL byte" in shown.stdout, shown.stdout + shown.stderr
    assert workers.procs[0].poll() is None
    assert "cannot claim tasks" not in workers.log(0), workers.log(0)


class Mixed:
    """Finishes every task at once when released; a task described `nan` returns a
    result Postgres refuses (JSON has no NaN: invalid input syntax for type json)."""

    def __init__(self) -> None:
        self.started = 0
        self.release = anyio.Event()

    async def execute(self, task: Task) -> Result:
        self.started += 1
        await self.release.wait()
        out: dict[str, Any] = {"n": float("nan") if task.description == "nan" else 1.0}
        return Result(out)


async def test_a_rejected_batch_is_stored_item_by_item_so_only_the_bad_result_fails(
    settings: Settings, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "echo.work.pool")
    q = TaskQueue(db)
    ids = [e.task_id for e in await q.enqueue_many(
        [NewTask(d, task_type="noop") for d in ("ok-1", "nan", "ok-2", "ok-3")])]
    executor = Mixed()
    pool = ExecutorPool(settings.work, db, {"noop": executor}, concurrency=4)
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        await wait_until(lambda: executor.started == 4)
        executor.release.set()  # four results, one batch with the next claim
        await wait_until(lambda: pool.metrics().total_processed == 4, timeout=20)
        # The pool still claims afterwards.
        more = await q.enqueue("ok-4", task_type="noop")
        await wait_until(lambda: executor.started == 5, timeout=20)
        pool.stop()
    rows = {i: await q.get(i) for i in ids}
    nan = rows.pop(ids[1])
    assert nan["status"] == "failed" and nan["error"].startswith("result not storable: "), nan
    assert "json" in nan["error"]
    assert all(r["status"] == "completed" for r in rows.values()), rows
    assert (await q.get(more.task_id))["status"] == "completed"
    m = pool.metrics()
    assert (m.succeeded, m.failed, m.lost) == (4, 1, 0)
    logged = [r.getMessage() for r in caplog.records]
    assert any("storing them one by one" in line for line in logged), logged
    assert any("result not storable" in line for line in logged), logged
