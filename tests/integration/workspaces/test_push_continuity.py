"""A task continues on another machine when its repository was added with `--push`:
every attempt pushes the task's branch (a failed attempt's edits as a checkpoint
commit), and the retry on a second machine (another state directory, its own
mirror, the same database) checks that branch out and goes on from it. Without
`--push` nothing is pushed and the retry elsewhere starts from the base. Real git,
real Postgres, the real pool; `command` tasks make the edits."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from echo.config import Settings
from echo.db import Database
from echo.org.client import Client
from echo.work import CommandExecutor, ExecutorPool, TaskQueue
from echo.work.workspaces import Layout, WorkspaceExecutor
from tests.helpers import wait_until
from tests.integration.workspaces.gitrepo import run_git, user_repo
from tests.integration.workspaces.test_workspaces import FAST, FINAL, submit

#: Attempt 1 writes step 1 and fails; a later attempt that finds step 1 adds step 2.
STEPS = ("import os, pathlib, sys\n"
         "p = pathlib.Path('progress.txt')\n"
         "if not p.exists():\n"
         "    p.write_text('step 1\\n'); sys.exit(3)\n"
         "p.write_text(p.read_text() + 'step 2 in ' + os.getcwd() + '\\n')\n")


async def run_on(machine: Settings, db: Database, task_id: int) -> dict[str, Any]:
    """One machine's pool (its own state directory) until the task is final."""
    q = TaskQueue(db)
    pool = ExecutorPool(machine, db, {"command": WorkspaceExecutor(CommandExecutor(),
                                                                   machine.state_dir)},
                        concurrency=1, roles=["cto"], backoff=FAST)

    async def final() -> bool:
        return (await q.get(task_id))["status"] in FINAL

    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        await wait_until(final, timeout=120, interval=0.05)
        pool.stop()
    return await q.get(task_id)


@pytest.mark.parametrize("push", [True, False])
async def test_a_retry_on_another_machine_continues_from_the_pushed_branch(
        settings: Settings, db: Database, tmp_path: Path, push: bool) -> None:
    source = user_repo(tmp_path / "user-app")
    first = settings.model_copy(update={"state_dir": tmp_path / "machine-a"})
    second = settings.model_copy(update={"state_dir": tmp_path / "machine-b"})
    async with Client(settings, database=db) as client:
        async with client.repos() as repos:
            await repos.add("app", str(source), push=push)
        task_id = await submit(client, [sys.executable, "-c", STEPS], max_retries=0)
        failed = await run_on(first, db, task_id)
        assert failed["status"] == "dead"  # no retries left: the operator retries it
        branch = f"echo/cto/task-{task_id}"
        on_user_repo = run_git(source, "branch", "--list", branch)
        assert on_user_repo == (branch if push else "")  # attempt 1, pushed as a checkpoint
        await client.retry_task(task_id)
        task = await run_on(second, db, task_id)
    there = Layout.of(second.state_dir, "app").worktree(task_id)
    if push:  # attempt 1's edit came along: the retry on machine B went on from it
        assert task["status"] == "completed", task["error"]
        ws = task["result"]["workspace"]
        assert (ws["path"], ws["branch"], ws["pushed"]) == (str(there), branch, True)
        mirror = Layout.of(second.state_dir, "app").mirror
        assert run_git(mirror, "show", f"{ws['head']}:progress.txt") == f"step 1\nstep 2 in {there}"
        assert run_git(source, "rev-parse", branch) == ws["head"]  # the finished branch, pushed
    else:  # nothing left machine A: the retry started from the base, and found no step 1
        assert task["status"] == "dead"
        assert (there / "progress.txt").read_text() == "step 1\n"
    assert run_git(source, "status", "--porcelain") == ""  # the user's files untouched


#: Each attempt adds one step; the task is done at its third.
THREE = ("import os, pathlib, sys\n"
         "p = pathlib.Path('progress.txt')\n"
         "lines = p.read_text().splitlines() if p.exists() else []\n"
         "lines.append(f'step {len(lines) + 1} in ' + os.getcwd())\n"
         "p.write_text('\\n'.join(lines) + '\\n')\n"
         "sys.exit(0 if len(lines) == 3 else 3)\n")


async def test_back_on_the_first_machine_it_goes_on_from_the_second_ones_push(
        settings: Settings, db: Database, tmp_path: Path) -> None:
    # A, then B, then A again (found in review: A reused its stale worktree and its
    # forced push overwrote what B had pushed).
    source = user_repo(tmp_path / "user-app")
    a = settings.model_copy(update={"state_dir": tmp_path / "machine-a"})
    b = settings.model_copy(update={"state_dir": tmp_path / "machine-b"})
    async with Client(settings, database=db) as client:
        async with client.repos() as repos:
            await repos.add("app", str(source), push=True)
        task_id = await submit(client, [sys.executable, "-c", THREE], max_retries=0)
        for machine in (a, b):
            assert (await run_on(machine, db, task_id))["status"] == "dead"
            await client.retry_task(task_id)
        task = await run_on(a, db, task_id)
    assert task["status"] == "completed", task["error"]
    ws = task["result"]["workspace"]
    steps = run_git(source, "show", f"{ws['head']}:progress.txt").splitlines()
    assert steps == [f"step 1 in {Layout.of(a.state_dir, 'app').worktree(task_id)}",
                     f"step 2 in {Layout.of(b.state_dir, 'app').worktree(task_id)}",
                     f"step 3 in {Layout.of(a.state_dir, 'app').worktree(task_id)}"]
    assert run_git(source, "rev-parse", f"echo/cto/task-{task_id}") == ws["head"]
