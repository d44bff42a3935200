"""The pool through a database outage: degraded, never crashed, nothing lost."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from echo.db import Database, migrate
from echo.work import Backoff, ExecutorPool, NoopExecutor, TaskQueue
from tests.conftest import make_settings

pytestmark = pytest.mark.chaos


async def test_pool_survives_an_outage_and_writes_the_result_afterwards(
    own_postgres, namespace: str, tmp_path: Path
) -> None:
    s = make_settings(own_postgres.dsn, None, namespace, tmp_path)
    s = s.model_copy(update={"connect_timeout": 1.0, "command_timeout": 2.0})
    await migrate(s)
    database = await Database.open(s, max_size=4)
    q = TaskQueue(database)
    made = await q.enqueue("outlives the outage", task_type="noop", payload={"sleep": 1.0})
    pool = ExecutorPool(s, database, {"noop": NoopExecutor()}, lease_seconds=60,
                        backoff=Backoff(0.05, 0.1))
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(pool.run)
            with anyio.fail_after(10):
                while pool.metrics().active == 0:
                    await anyio.sleep(0.02)
            await anyio.to_thread.run_sync(own_postgres.stop, "immediate")
            with anyio.fail_after(15):  # the result is ready but cannot be written
                while not (pool.degraded and pool.metrics().unwritten == 1):
                    await anyio.sleep(0.05)
            await anyio.sleep(0.5)  # a few failed write attempts: it keeps retrying
            assert pool.metrics().active == 1 and pool.metrics().succeeded == 0
            await anyio.to_thread.run_sync(own_postgres.start)
            with anyio.fail_after(30):
                while pool.metrics().succeeded == 0:
                    await anyio.sleep(0.05)
            assert not pool.degraded
            second = await q.enqueue("after the outage", task_type="noop")
            with anyio.fail_after(10):
                while pool.metrics().succeeded < 2:
                    await anyio.sleep(0.05)
            pool.stop()
        assert (await q.get(made.task_id))["status"] == "completed"
        assert (await q.get(second.task_id))["status"] == "completed"
        assert database.leaks == 0
    finally:
        await database.close()
