"""Merges into a base that requires approval (issue 22 item 5; `repo add
--require-approval`): real git, real Postgres, the real pool. The merge queue records a
`merge` request and lands the branch only once an operator approved it; a denial fails
the merge with the reason and leaves the base where it was."""

from __future__ import annotations

from pathlib import Path

from echo.config import Settings
from echo.db import Database
from echo.org.client import Client
from echo.work.workspaces import Layout
from tests.helpers import run_cli
from tests.integration.workspaces.gitrepo import run_git
from tests.integration.workspaces.test_workspaces import run_tasks, source, submit, writes

__all__ = ["source"]  # the fixture, shared with test_workspaces


async def a_finished_task(settings: Settings, db: Database, source: Path) -> int:
    added = await run_cli(settings, "repo", "add", "app", str(source), "--require-approval")
    assert added.returncode == 0, added.stderr
    assert "merges need approval" in added.stdout
    async with Client(settings, database=db) as client:
        task_id = await submit(client, writes(**{"app.txt": "v2\n"}))
    assert (await run_tasks(settings, db, [task_id]))[task_id]["status"] == "completed"
    return task_id


async def test_a_merge_waits_for_approval_then_lands(
        settings: Settings, db: Database, source: Path) -> None:
    task_id = await a_finished_task(settings, db, source)
    mirror = Layout.of(settings.state_dir, "app").mirror
    async with Client(settings, database=db) as client:
        async with client.repos() as repos:
            waiting = await repos.merge("app")
            again = await repos.merge("app")
        assert [(s.task_id, s.status) for s in waiting] == [(task_id, "awaiting_approval")]
        assert [s.status for s in again] == ["awaiting_approval"]  # the same request
        [request] = await client.approvals(task_id=task_id)
        assert (request.kind, request.state) == ("merge", "pending")
        assert request.input["repo"] == "app" and request.input["base"] == "main"
        assert request.summary() == f"merge {request.input['branch']} into main of app"
        assert run_git(mirror, "show", "main:app.txt") == "v1"  # not merged yet
        await client.approve(request.id, by="ops-test")
        async with client.repos() as repos:
            landed = await repos.merge("app")
            after = await repos.merge("app")
        assert [(s.task_id, s.status) for s in landed] == [(task_id, "merged")]
        assert after == []
        assert (await client.approval(request.id)).approval.state == "used"
    assert run_git(mirror, "show", "main:app.txt") == "v2"


async def test_a_denied_merge_fails_with_the_reason_and_the_base_stays(
        settings: Settings, db: Database, source: Path) -> None:
    task_id = await a_finished_task(settings, db, source)
    async with Client(settings, database=db) as client:
        async with client.repos() as repos:
            await repos.merge("app")
        [request] = await client.approvals(task_id=task_id)
        await client.deny(request.id, "not this week", by="ops-test")
        async with client.repos() as repos:
            steps = await repos.merge("app")
            shown = await repos.show("app")
            again = await repos.merge("app")
    assert [(s.status, s.reason) for s in steps] == [
        ("failed", f"merge not approved (request {request.id}, denied by ops-test: "
                   "not this week)")]
    assert again == []
    assert [(m["status"], m["reason"]) for m in shown.merges] == [("failed", steps[0].reason)]
    assert run_git(Layout.of(settings.state_dir, "app").mirror, "show", "main:app.txt") == "v1"
