"""`echoctl worker --merge-every`: a real worker process runs a repository task in its
worktree and its automatic merge pass lands the branch on the mirror's base; the
user's checkout stays as it was."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from echo.config import Settings
from echo.db import Database
from echo.org.client import Client
from echo.work.workspaces import Layout
from tests.helpers import wait_until
from tests.integration.work.test_workers import Workers
from tests.integration.workspaces.gitrepo import run_git, snapshot, user_repo
from tests.integration.workspaces.test_workspaces import writes


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(settings, tmp_path)
    yield w
    w.stop_all()


async def test_a_worker_merges_finished_branches_on_its_own(
        settings: Settings, db: Database, workers: Workers, tmp_path: Path) -> None:
    source = user_repo(tmp_path / "user-app")
    before = snapshot(source)
    async with Client(settings, database=db) as client:
        async with client.repos() as repos:
            await repos.add("app", str(source), test_command=f"{sys.executable} -c pass")
        task_id = (await client.submit_task("add notes", role="cto", task_type="command",
                                            repo="app",
                                            payload={"argv": writes(**{"notes.txt": "n\n"})})
                   ).task_id
    proc = workers.start("--executor", "command", "--roles", "cto", "--merge-every", "0.3")
    await workers.ready(0)

    async def merged() -> bool:
        async with db.acquire() as conn:
            return await conn.fetchval(
                "SELECT status FROM repository_merges WHERE task_id = $1", task_id) == "merged"

    await wait_until(merged, timeout=60, interval=0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, workers.log(0)
    mirror = Layout.of(settings.state_dir, "app").mirror
    assert run_git(mirror, "show", "main:notes.txt") == "n"
    async with db.acquire() as conn:
        actors = await conn.fetch("SELECT actor, action FROM agent_actions WHERE subject_type = "
                                  "'task' AND subject_id = $1 AND action LIKE 'merge.%' "
                                  "ORDER BY id", str(task_id))
    assert [a["action"] for a in actors] == ["merge.merging", "merge.merged"]
    assert all(a["actor"].endswith(":merge") for a in actors)
    assert snapshot(source) == before
