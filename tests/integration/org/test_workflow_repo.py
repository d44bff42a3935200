"""`workflow start --repo NAME` (issue 22, item 1): an unknown repository is one line,
exit 2, before anything is written; a known one is recorded on the workflow, and the
tasks its decision creates carry it (so each works in its own worktree of it).

The CEO's driver runs here on the real store and queue (no agent processes: the
decision is written as the CEO writes it), so what lands in `agent_tasks` is what a
worker would claim."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from echo.config import Settings
from echo.db import Database
from echo.errors import BadRepository
from echo.org.client import Client
from echo.org.roles import load_roles
from echo.org.workflow import Driver, WorkflowStore
from echo.work import TaskQueue
from tests.helpers import run_cli
from tests.integration.workspaces.gitrepo import user_repo


async def _written(db: Database) -> tuple[int, int]:
    async with db.acquire() as conn:
        return (await conn.fetchval("SELECT count(*) FROM workflows"),
                await conn.fetchval("SELECT count(*) FROM messages"))


async def test_an_unknown_repository_is_refused_before_anything_is_written(
        settings: Settings, db: Database) -> None:
    refused = await run_cli(settings, "workflow", "start", "Ship the API", "--repo", "nope")
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert refused.stderr.strip().splitlines() == [
        "error: unknown repository 'nope'; known repositories: none yet (`echoctl repo add`)"]
    async with Client(settings) as c:
        with pytest.raises(BadRepository, match="bad repository name"):
            await c.start_workflow("Ship the API", roles=["cto"], repo="Bad Name!")
    assert await _written(db) == (0, 0)


async def test_a_decided_workflows_tasks_name_its_repository(
        settings: Settings, db: Database, tmp_path: Path) -> None:
    source = user_repo(tmp_path / "app")
    added = await run_cli(settings, "repo", "add", "app", str(source))
    assert added.returncode == 0, added.stderr
    async with Client(settings) as c:
        wf = await c.start_workflow("Move the API to the new cluster", roles=["ceo", "cto"],
                                    repo="app")
        assert wf.repo is not None and (wf.repo["name"], wf.repo["source"]) == ("app", str(source))
        assert (await c.workflow(wf.id)).workflow.repo == wf.repo  # recorded, as shown

    store, queue = WorkflowStore(db), TaskQueue(db)
    roles = load_roles(settings.agents_dir)

    async def publish(*_args: object, **_kw: object) -> None:
        raise AssertionError("enqueueing posts nothing")

    driver = Driver(roles["ceo"], store, publish, queue, roles=roles)  # type: ignore[arg-type]
    decision = await store.decide(
        wf.id, actor="ceo", outcome="approved", consensus="approved", summary="do it",
        source="fallback", fallback_reason=None,
        tasks=[{"role": "cto", "description": "Move the API"}])
    [made] = await driver.enqueue(wf, decision)
    task = await queue.get(made["task_id"])
    payload = task["payload"] if isinstance(task["payload"], dict) else json.loads(task["payload"])
    assert payload["workflow"] == wf.id and payload["repo"] == wf.repo
    shown = await run_cli(settings, "tasks", "show", str(made["task_id"]), "--json")
    assert json.loads(shown.stdout)["payload"]["repo"]["name"] == "app"
