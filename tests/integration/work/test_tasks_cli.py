"""`echoctl tasks list` says what the workflow says: a task that could not run because
Claude was unavailable is `skipped`, and `tries` counts the runs that started."""

from __future__ import annotations

import json

from echo import db as dbmod
from echo.config import Settings
from echo.org.workflow import SKIPPED
from tests.helpers import run_cli


async def test_tasks_list_shows_skipped_and_the_runs_that_started(
    settings: Settings, db: dbmod.Database
) -> None:
    made = await run_cli(settings, "tasks", "submit", "Summarise the plan", "--role", "cto",
                         "--max-retries", "1", "--json")
    assert made.returncode == 0, made.stderr
    task_id = json.loads(made.stdout)["task_id"]
    waiting = await run_cli(settings, "tasks", "submit", "Later", "--type", "noop")
    assert waiting.returncode == 0, waiting.stderr
    async with db.acquire() as conn:  # what a worker leaves after one run without Claude
        await conn.execute(
            "UPDATE agent_tasks SET status = 'failed', attempt = 1, error = $2 WHERE task_id = $1",
            task_id, f"{SKIPPED} (ClaudeNotInstalled: no claude)")
    listed = await run_cli(settings, "tasks", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert " skipped " in rows[str(task_id)] and " 1/2 " in rows[str(task_id)], listed.stdout
    assert " pending " in rows[str(task_id + 1)] and " 0/4 " in rows[str(task_id + 1)]
    assert max(len(line) for line in listed.stdout.splitlines()) <= 80
    as_json = json.loads((await run_cli(settings, "tasks", "list", "--json")).stdout)
    assert as_json[1]["status"] == "failed" and as_json[1]["attempt"] == 1  # JSON: the record
