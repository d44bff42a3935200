"""8 worker processes racing over 10,000 tasks: each task runs exactly once.

The 4 x 2,000 case is in tests/integration/work/test_workers.py, with the worker
killed mid-task whose task is rescued and completed once; this is the same
promise at twice the workers and five times the tasks, checked from the audit
rows: one `task.claimed` and one `task.completed` per task, nothing else.
"""

from __future__ import annotations

import signal

import pytest

from echo.config import Settings
from echo.db import Database
from echo.work import NewTask, TaskQueue
from tests.integration.work.test_workers import Workers, until, workers  # noqa: F401 (fixture)

pytestmark = pytest.mark.chaos

TASKS = 10_000
WORKERS = 8


async def test_eight_workers_execute_10000_tasks_exactly_once(
    settings: Settings, db: Database, workers: Workers  # noqa: F811
) -> None:
    for _ in range(WORKERS):
        workers.start("--concurrency", "16", "--executor", "noop")
    for i in range(WORKERS):
        await workers.ready(i, timeout=60)
    q = TaskQueue(db)
    for start in range(0, TASKS, 500):
        await q.enqueue_many([NewTask(f"t{i}", task_type="noop") for i in range(start, start + 500)])
    await until(q, lambda c: c["completed"] == TASKS, timeout=100)
    for proc in workers.procs:
        proc.send_signal(signal.SIGTERM)
    for i, proc in enumerate(workers.procs):
        assert proc.wait(timeout=30) == 0, workers.log(i)
    async with db.acquire() as conn:
        per_task = await conn.fetch(
            "SELECT subject_id, count(*) FILTER (WHERE action = 'task.claimed') AS claims, "
            "count(*) FILTER (WHERE action = 'task.completed') AS completions, "
            "count(*) FILTER (WHERE action NOT IN ('task.enqueued', 'task.claimed', "
            "'task.completed')) AS other "
            "FROM agent_actions WHERE subject_type = 'task' GROUP BY subject_id")
        counts = await conn.fetchrow(
            "SELECT count(*) AS n, count(*) FILTER (WHERE status = 'completed') AS done, "
            "count(DISTINCT split_part(assigned_worker_id, ':', 2)) AS workers FROM agent_tasks")
    assert len(per_task) == TASKS
    assert {(r["claims"], r["completions"], r["other"]) for r in per_task} == {(1, 1, 0)}
    assert counts["n"] == counts["done"] == TASKS
    assert counts["workers"] >= 2, counts  # the work was shared
