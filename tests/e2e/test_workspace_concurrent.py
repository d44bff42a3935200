"""Two tasks on one repository at once, with the REAL `claude` CLI against the fake API,
whose scripted turn writes a file in the working directory the CLI states (`{cwd}`):
each task runs in its own worktree, ends on its own branch with its own commit
(author: its role), the base and the user's checkout untouched; then the merge queue
lands the first and catches the second's conflict (both wrote `plan.md`), sending it
back with the reason. The same checks with command tasks: tests/integration/workspaces."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from echo.config import Settings
from echo.db import Database
from echo.org.client import Client
from echo.work import ClaudeRunOptions, ExecutorPool, TaskQueue
from echo.work.workspaces import Layout, WorkspaceExecutor
from tests.e2e import test_claude_executor as executor_tests
from tests.e2e.test_claude_runs import FAST
from tests.fakes.anthropic import FakeAnthropic, text, tool_use
from tests.helpers import no_claude_left, wait_until
from tests.integration.workspaces.gitrepo import run_git, snapshot, user_repo

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

claude_bin = executor_tests.claude_bin
api = executor_tests.api


async def test_two_claude_tasks_at_once_end_on_their_own_branches_then_the_queue_catches_a_conflict(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    source = user_repo(tmp_path / "user-app")
    before = snapshot(source)
    api.conversation(tool_use("Write", {"file_path": "{cwd}/plan.md", "content": "planned in {cwd}\n"}),
                     text("Plan written."))
    async with Client(settings, database=db) as client:
        async with client.repos() as repos:
            await repos.add("app", str(source))
        ids = [(await client.submit_task("Write the plan", role=role, repo="app")).task_id
               for role in ("cto", "ceo")]
        claude = executor_tests.make_executor(settings, claude_bin, api, tmp_path,
                                              options=ClaudeRunOptions(max_turns=4),
                                              config_dir_per_slot=True)
        claude.cwd = None
        pool = ExecutorPool(settings.work, db, {"claude": WorkspaceExecutor(claude, settings.state_dir)},
                            concurrency=2, roles=["cto", "ceo"], backoff=FAST)
        q = TaskQueue(db)
        running_together = False
        async with anyio.create_task_group() as tg:
            await tg.start(pool.run)

            async def both_done() -> bool:
                nonlocal running_together
                rows = [await q.get(i) for i in ids]
                running_together |= all(r["status"] == "running" for r in rows)
                return all(r["status"] in ("completed", "failed", "dead") for r in rows)

            await wait_until(both_done, timeout=180, interval=0.05)
            pool.stop()
        rows = {i: await q.get(i) for i in ids}
        async with client.repos() as repos:
            steps = await repos.merge("app")
    layout = Layout.of(settings.state_dir, "app")
    heads = set()
    for (task_id, row), role in zip(rows.items(), ("cto", "ceo"), strict=True):
        assert row["status"] == "completed", row["error"]
        ws = row["result"]["workspace"]
        there = layout.worktree(task_id)
        assert (ws["path"], ws["branch"], ws["files"]) == (str(there), f"echo/{role}/task-{task_id}",
                                                          ["plan.md"])
        assert run_git(layout.mirror, "show", f"{ws['head']}:plan.md") == f"planned in {there}"
        assert run_git(layout.mirror, "log", "-1", "--format=%an", ws["head"]) == role
        assert run_git(layout.mirror, "rev-list", "--count", f"{ws['base_commit']}..{ws['head']}") == "1"
        heads.add(ws["head"])
    assert len(heads) == 2 and running_together  # concurrent, each its own commit
    assert [(s.task_id, s.status, s.sent_back) for s in steps] == \
        [(ids[0], "merged", False), (ids[1], "failed", True)]
    assert steps[1].reason is not None and "plan.md" in steps[1].reason
    sent_back = await TaskQueue(db).get(ids[1])
    assert sent_back["status"] == "pending" and sent_back["payload"]["merge_failure"] == steps[1].reason
    assert run_git(layout.mirror, "show", "main:plan.md") == f"planned in {layout.worktree(ids[0])}"
    assert snapshot(source) == before
    no_claude_left()
