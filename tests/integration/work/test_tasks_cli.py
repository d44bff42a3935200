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


async def failed_and_skipped(settings: Settings, db: dbmod.Database) -> tuple[int, int]:
    """Two tasks a worker left failed: one because its command failed, one because Claude
    was unavailable (what the workflow's agents leave: `skipped`)."""
    ids = []
    for description in ("Run the migration", "Summarise the plan"):
        made = await run_cli(settings, "tasks", "submit", description, "--role", "cto", "--json")
        assert made.returncode == 0, made.stderr
        ids.append(json.loads(made.stdout)["task_id"])
    failed, skipped = ids
    async with db.acquire() as conn:
        await conn.execute("UPDATE agent_tasks SET status = 'failed', attempt = 1, error = $2 "
                           "WHERE task_id = $1", failed, "command exited 2")
        await conn.execute("UPDATE agent_tasks SET status = 'failed', attempt = 1, error = $2 "
                           "WHERE task_id = $1", skipped, f"{SKIPPED} (ClaudeNotInstalled: no claude)")
    return failed, skipped


async def test_tasks_list_filters_by_every_outcome_it_shows(settings: Settings, db: dbmod.Database) -> None:
    failed, skipped = await failed_and_skipped(settings, db)
    pending = json.loads((await run_cli(settings, "tasks", "submit", "Later", "--json")).stdout)["task_id"]

    async def listed(status: str) -> list[int]:
        done = await run_cli(settings, "tasks", "list", "--status", status, "--json")
        assert done.returncode == 0, done.stderr
        return [t["task_id"] for t in json.loads(done.stdout)]

    assert await listed("skipped") == [skipped]
    assert await listed("failed") == [failed]  # a skipped task is not listed as failed too
    assert await listed("pending") == [pending]
    for status in ("running", "completed", "cancelled", "dead"):
        assert await listed(status) == []
    shown = await run_cli(settings, "tasks", "list", "--status", "skipped")
    assert f"{skipped} " in shown.stdout and " skipped " in shown.stdout


async def test_an_unknown_status_names_every_outcome(settings: Settings) -> None:
    done = await run_cli(settings, "tasks", "list", "--status", "lost")
    assert done.returncode == 2
    said = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(said) == 1 and "'lost'" in said[0], done.stderr
    for outcome in ("pending", "running", "completed", "failed", "skipped", "cancelled", "dead"):
        assert outcome in said[0]


async def test_counts_keep_skipped_apart_from_failed(settings: Settings, db: dbmod.Database) -> None:
    from echo.org.client import Client

    await failed_and_skipped(settings, db)
    async with Client(settings) as client:
        counts = await client.task_counts()
    assert counts["failed"] == 1 and counts["skipped"] == 1
    assert sum(counts.values()) == 2
