"""The pool through a database outage: degraded, never crashed, nothing lost."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from echo.db import Database, migrate
from echo.runtime import Backoff
from echo.work import ExecutorPool, NoopExecutor, TaskQueue
from tests.conftest import make_settings
from tests.helpers import wait_until

pytestmark = pytest.mark.chaos


async def test_pool_survives_an_outage_and_writes_the_result_afterwards(
    own_postgres, namespace: str, tmp_path: Path
) -> None:
    s = make_settings(own_postgres.dsn, None, namespace, tmp_path)
    s = s.model_copy(update={"connect_timeout": 1.0, "command_timeout": 2.0})
    await migrate(s.database)
    database = await Database.open(s.database, max_size=4)
    q = TaskQueue(database)
    made = await q.enqueue("outlives the outage", task_type="noop", payload={"sleep": 1.0})
    pool = ExecutorPool(s.work, database, {"noop": NoopExecutor()}, lease_seconds=60,
                        backoff=Backoff(initial=0.05, max=0.1))
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(pool.run)
            await wait_until(lambda: pool.metrics().active == 1)
            await anyio.to_thread.run_sync(own_postgres.stop, "immediate")
            # The result is ready but cannot be written; it keeps retrying, and holds it.
            await wait_until(lambda: pool.degraded and pool.metrics().unwritten == 1, timeout=15)
            failed_writes = pool.metrics().db_errors
            await wait_until(lambda: pool.metrics().db_errors >= failed_writes + 3, timeout=15)
            assert pool.metrics().active == 1 and pool.metrics().succeeded == 0
            await anyio.to_thread.run_sync(own_postgres.start)
            await wait_until(lambda: pool.metrics().succeeded == 1, timeout=30)
            assert not pool.degraded
            second = await q.enqueue("after the outage", task_type="noop")
            await wait_until(lambda: pool.metrics().succeeded == 2)
            pool.stop()
        assert (await q.get(made.task_id))["status"] == "completed"
        assert (await q.get(second.task_id))["status"] == "completed"
        assert database.leaks == 0
    finally:
        await database.close()
