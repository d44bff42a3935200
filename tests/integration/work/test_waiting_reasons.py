"""A pending task nobody can claim says why (issue 18, item 7). Before, with no
standalone worker, `tasks submit "x"` stayed `pending` with no word in `tasks list`,
`tasks show`, `status` or the API. Real Postgres, real `echoctl worker` processes."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from echo.config import Settings
from echo.db import Database
from echo.org.client import Client
from echo.work import TaskQueue
from tests.helpers import run_cli, wait_until
from tests.integration.work.test_workers import Workers

NO_WORKER = "waiting: no worker for role-less tasks; run `echoctl worker`"


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(settings, tmp_path)
    yield w
    w.stop_all()


async def _waiting(s: Settings, task_id: int) -> str | None:
    async with Client(s) as c:
        [row] = [t for t in await c.tasks() if t.task_id == task_id]
        shown = (await c.task(task_id)).task.get("waiting")
    assert shown == row.waiting, (shown, row.waiting)  # `tasks show` says what `list` says
    return row.waiting


@pytest.mark.timeout(400)  # three worker processes and two CLI runs, on a loaded machine
async def test_a_task_nobody_claims_says_which_worker_to_start(
        settings: Settings, db: Database, workers: Workers) -> None:
    async with Client(settings) as c:
        roleless = (await c.submit_task("x", task_type="noop")).task_id
        for_cto = (await c.submit_task("y", role="cto", task_type="noop")).task_id

    # nothing runs: the role-less task needs `echoctl worker`, the cto task its agent
    assert await _waiting(settings, roleless) == NO_WORKER
    assert await _waiting(settings, for_cto) == (
        "waiting: the cto agent is not running; run `echoctl up`")
    table = await run_cli(settings, "tasks", "list")
    # whole, though wrapped within the table's 80 columns
    assert "waiting: no worker for role-less" in table.stdout, table.stdout
    assert "tasks; run `echoctl worker`" in table.stdout, table.stdout
    status = await run_cli(settings, "status")
    assert "1 pending noop task(s) without a role: " + NO_WORKER in status.stdout, status.stdout
    assert "1 pending noop task(s) for cto: waiting: the cto agent" in status.stdout
    shown = await run_cli(settings, "tasks", "show", str(roleless))
    assert "no worker for role-less tasks" in shown.stdout, shown.stdout

    # a worker for cto's tasks runs the cto task, and still not the role-less one
    workers.start("--roles", "cto", "--executor", "noop")
    await workers.ready(0, timeout=120)
    q = TaskQueue(db)

    async def done(task_id: int) -> bool:
        return (await q.get(task_id))["status"] == "completed"

    await wait_until(lambda: done(for_cto), timeout=60, interval=0.1)
    assert await _waiting(settings, roleless) == NO_WORKER

    # a role-less worker of another type: the reason names the type
    other = workers.start("--executor", "command")
    await workers.ready(1, timeout=120)
    await wait_until(lambda: _is(settings, roleless, "waiting: no worker runs noop tasks; "
                                 "run `echoctl worker --executor noop`"), timeout=60, interval=0.1)
    other.send_signal(signal.SIGTERM)  # a clean stop takes its row with it
    assert other.wait(timeout=30) == 0, workers.log(1)
    assert await _waiting(settings, roleless) == NO_WORKER

    # and what the reason says to do makes it run
    workers.start("--executor", "noop")
    await workers.ready(2, timeout=120)
    await wait_until(lambda: done(roleless), timeout=60, interval=0.1)
    assert await _waiting(settings, roleless) is None


async def _is(s: Settings, task_id: int, expected: str) -> bool:
    return await _waiting(s, task_id) == expected
