"""A task continues on another machine when its repository was added with `--push`:
every attempt pushes the task's branch (a failed attempt's edits as a checkpoint
commit), and the retry on a second machine (another state directory, its own
mirror, the same database) checks that branch out and goes on from it. Without
`--push` nothing is pushed, so the task stays with the machine that has its worktree:
only a worker there claims it again (another says why it waits), unless the operator
retries it `--anywhere`, from the base. Real git, real Postgres, the real pool;
`command` tasks make the edits."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from echo.config import Settings
from echo.db import Database
from echo.errors import UsageError
from echo.org.client import Client
from echo.work import CommandExecutor, ExecutorPool, TaskQueue
from echo.work.workers import WorkerRegistry
from echo.work.workspaces import Layout, WorkspaceExecutor, workspace_place
from tests.helpers import run_cli, wait_until
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
    pool = ExecutorPool(machine.work, db, {"command": WorkspaceExecutor(CommandExecutor(),
                                                                   machine.state_dir)},
                        concurrency=1, roles=["cto"], backoff=FAST)

    async def final() -> bool:
        return (await q.get(task_id))["status"] in FINAL

    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        await wait_until(final, timeout=120, interval=0.05)
        pool.stop()
    return await q.get(task_id)


def two_machines(settings: Settings, tmp_path: Path) -> tuple[Path, Settings, Settings]:
    """The user's repository, and two machines: two state directories, one database."""
    return (user_repo(tmp_path / "user-app"),
            settings.model_copy(update={"state_dir": tmp_path / "machine-a"}),
            settings.model_copy(update={"state_dir": tmp_path / "machine-b"}))


async def test_a_retry_on_another_machine_continues_from_the_pushed_branch(
        settings: Settings, db: Database, tmp_path: Path) -> None:
    source, first, second = two_machines(settings, tmp_path)
    async with Client(settings, database=db) as client:
        async with client.repos() as repos:
            await repos.add("app", str(source), push=True)
        task_id = await submit(client, [sys.executable, "-c", STEPS], max_retries=0)
        failed = await run_on(first, db, task_id)
        assert failed["status"] == "dead"  # no retries left: the operator retries it
        assert failed["workspace_at"] is None  # pushed: any machine may go on with it
        branch = f"echo/cto/task-{task_id}"
        assert run_git(source, "branch", "--list", branch) == branch  # attempt 1, a checkpoint
        await client.retry_task(task_id)
        task = await run_on(second, db, task_id)
    there = Layout.of(second.state_dir, "app").worktree(task_id)
    # attempt 1's edit came along: the retry on machine B went on from it
    assert task["status"] == "completed", task["error"]
    ws = task["result"]["workspace"]
    assert (ws["path"], ws["branch"], ws["pushed"]) == (str(there), branch, True)
    mirror = Layout.of(second.state_dir, "app").mirror
    assert run_git(mirror, "show", f"{ws['head']}:progress.txt") == f"step 1\nstep 2 in {there}"
    assert run_git(source, "rev-parse", branch) == ws["head"]  # the finished branch, pushed
    assert run_git(source, "status", "--porcelain") == ""  # the user's files untouched


async def test_without_a_push_the_task_stays_with_the_machine_that_has_its_worktree(
        settings: Settings, db: Database, tmp_path: Path) -> None:
    source, first, second = two_machines(settings, tmp_path)
    async with Client(settings, database=db) as client:
        async with client.repos() as repos:
            await repos.add("app", str(source))
        task_id = await submit(client, [sys.executable, "-c", STEPS], max_retries=0)
        failed = await run_on(first, db, task_id)
        assert failed["status"] == "dead"
        assert failed["workspace_at"] == workspace_place(first.work)
        assert run_git(source, "branch", "--list", f"echo/cto/task-{task_id}") == ""  # no push
        await client.retry_task(task_id)

        q = TaskQueue(db)  # machine B's claim passes it by; the task says where it waits
        assert await q.claim(["b:1:0"], roles=["cto"], place=workspace_place(second.work)) == []
        await WorkerRegistry(db).register("b:1", ["cto"], ["command"], workspace_place(second.work))
        waiting = (await client.task(task_id)).task["waiting"]
        assert waiting is not None and workspace_place(first.work) in waiting
        assert f"echoctl tasks retry {task_id} --anywhere" in waiting
        [listed] = [t for t in await client.tasks() if t.task_id == task_id]
        assert listed.waiting == waiting and listed.workspace_at == workspace_place(first.work)
        await WorkerRegistry(db).forget("b:1")

        task = await run_on(first, db, task_id)  # machine A goes on from step 1
        assert task["status"] == "completed", task["error"]
        ws = task["result"]["workspace"]
        mirror = Layout.of(first.state_dir, "app").mirror
        there = Layout.of(first.state_dir, "app").worktree(task_id)
        assert ws["path"] == str(there)
        assert run_git(mirror, "show", f"{ws['head']}:progress.txt") == f"step 1\nstep 2 in {there}"

        # The operator may let it go anywhere: machine B starts over from the base.
        second_task = await submit(client, [sys.executable, "-c", STEPS], max_retries=0)
        assert (await run_on(first, db, second_task))["status"] == "dead"
        with pytest.raises(UsageError, match="only failed, dead or cancelled"):
            await client.retry_task(task_id, anywhere=True)  # a completed task stays done
        retried = await run_cli(settings, "tasks", "retry", str(second_task), "--anywhere")
        assert retried.returncode == 0 and "queued again for any worker" in retried.stdout
        assert (await q.get(second_task))["workspace_at"] is None
        elsewhere = await run_on(second, db, second_task)
    assert elsewhere["status"] == "dead"  # found no step 1 on machine B: from the base
    assert elsewhere["workspace_at"] == workspace_place(second.work)
    assert (Layout.of(second.state_dir, "app").worktree(second_task) / "progress.txt"
            ).read_text() == "step 1\n"
    assert run_git(source, "status", "--porcelain") == ""


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
    source, a, b = two_machines(settings, tmp_path)
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
