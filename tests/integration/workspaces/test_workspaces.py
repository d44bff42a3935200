"""Tasks in real repositories: real git in temporary directories, real Postgres, the
real pool. The edits are made by `command` tasks (a program writing files in its
working directory); tests/e2e/test_workspace_claude.py runs the real Claude CLI.

What a user relies on: each task ends on its own branch with its own commit, the
base in the mirror and the user's own checkout untouched; a task that edits
nothing says so; a retry continues in the same worktree; the merge queue lands
branches one at a time, and a conflict or a red test blocks the merge with the
reason; gc removes what is no longer needed."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from echo.config import Settings
from echo.db import Database
from echo.org.client import Client
from echo.runtime import Backoff
from echo.work import CommandExecutor, ExecutorPool, TaskQueue
from echo.work.workspaces import Layout, WorkspaceExecutor
from tests.helpers import run_cli, wait_until
from tests.integration.workspaces.gitrepo import run_git, snapshot, user_repo

FAST = Backoff(initial=0.01, max=0.05)
FINAL = ("completed", "failed", "dead")


def writes(**files: str) -> list[str]:
    """argv of a command that writes `files` (name: text) into its working directory."""
    return [sys.executable, "-c",
            "import json, pathlib, sys\n"
            "for name, text in json.loads(sys.argv[1]).items():\n"
            "    pathlib.Path(name).write_text(text)\n", json.dumps(files)]


async def run_tasks(settings: Settings, db: Database, ids: list[int], *,
                    concurrency: int = 2) -> dict[int, dict[str, Any]]:
    """Run the queue with a workspace-wrapped command executor until `ids` are final."""
    q = TaskQueue(db)
    pool = ExecutorPool(settings.work, db, {"command": WorkspaceExecutor(CommandExecutor(),
                                                                    settings.state_dir)},
                        concurrency=concurrency, roles=["cto", "ceo"], backoff=FAST)

    async def done() -> bool:
        return all([(await q.get(i))["status"] in FINAL for i in ids])

    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        await wait_until(done, timeout=120, interval=0.05)
        pool.stop()
    return {i: await q.get(i) for i in ids}


async def submit(client: Client, argv: list[str], *, role: str = "cto", repo: str = "app",
                 description: str = "edit the app", **kw: Any) -> int:
    made = await client.submit_task(description, role=role, task_type="command", repo=repo,
                                    payload={"argv": argv}, **kw)
    return made.task_id


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return user_repo(tmp_path / "user-app", {"README.md": "hello\n", "app.txt": "v1\n"})


async def test_two_concurrent_tasks_end_on_their_own_branches_and_the_user_checkout_is_untouched(
        settings: Settings, db: Database, source: Path) -> None:
    before = snapshot(source)
    async with Client(settings, database=db) as client:
        async with client.repos() as repos:
            await repos.add("app", str(source))
        first = await submit(client, writes(**{"one.txt": "from cto\n"}), role="cto",
                             description="add one.txt")
        second = await submit(client, writes(**{"two.txt": "from ceo\n"}), role="ceo",
                              description="add two.txt")
        rows = await run_tasks(settings, db, [first, second])
    assert [rows[i]["status"] for i in (first, second)] == ["completed", "completed"]
    mirror = Layout.of(settings.state_dir, "app").mirror
    for task_id, role, name in ((first, "cto", "one.txt"), (second, "ceo", "two.txt")):
        ws = rows[task_id]["result"]["workspace"]
        assert ws["branch"] == f"echo/{role}/task-{task_id}"
        assert (ws["changed"], ws["committed"], ws["files"]) == (True, True, [name])
        assert ws["base_commit"] == before["head"]
        assert f"{name} | 1 +" in ws["diffstat"]
        author = run_git(mirror, "log", "-1", "--format=%an <%ae>|%s|%b", ws["head"])
        assert author.startswith(f"{role} <{role}@echo.local>|add {name}|")
        assert f"ECHO-Task: {task_id}" in author
        assert run_git(mirror, "rev-parse", f"refs/heads/{ws['branch']}") == ws["head"]
        assert Path(ws["path"]).is_relative_to(settings.state_dir)
    assert run_git(mirror, "rev-parse", "refs/heads/main") == before["head"]  # base untouched
    assert snapshot(source) == before  # the user's checkout: not a byte, not a ref

    shown = await run_cli(settings, "tasks", "show", str(first))
    assert f"workspace: app branch echo/cto/task-{first} from main" in shown.stdout
    assert "1 file(s) changed" in shown.stdout
    diff = await run_cli(settings, "tasks", "diff", str(first))
    assert diff.returncode == 0
    assert "+++ b/one.txt" in diff.stdout and "+from cto" in diff.stdout


async def test_a_task_that_edits_nothing_says_no_changes(
        settings: Settings, db: Database, source: Path) -> None:
    async with Client(settings, database=db) as client:
        async with client.repos() as repos:
            await repos.add("app", str(source))
        task_id = await submit(client, [sys.executable, "-c", "print('read only')"])
        rows = await run_tasks(settings, db, [task_id])
    ws = rows[task_id]["result"]["workspace"]
    assert (ws["changed"], ws["committed"], ws["files"], ws["head"]) == \
        (False, False, [], ws["base_commit"])
    diff = await run_cli(settings, "tasks", "diff", str(task_id))
    assert diff.returncode == 0 and diff.stdout.strip() == f"task {task_id}: no changes"
    shown = await run_cli(settings, "tasks", "show", str(task_id))
    assert "no changes" in shown.stdout


async def test_a_retry_continues_in_the_same_worktree_and_branch(
        settings: Settings, db: Database, source: Path) -> None:
    # Attempt 1 leaves a file uncommitted and fails; attempt 2 finds it and finishes.
    script = ("import os, pathlib, sys\n"
              "p = pathlib.Path('progress.txt')\n"
              "if os.environ['ECHO_TASK_ATTEMPT'] == '1':\n"
              "    p.write_text('step 1\\n'); sys.exit(3)\n"
              "p.write_text(p.read_text() + 'step 2 in ' + os.getcwd() + '\\n')\n")
    async with Client(settings, database=db) as client:
        async with client.repos() as repos:
            await repos.add("app", str(source))
        task_id = await submit(client, [sys.executable, "-c", script], max_retries=1)
        rows = await run_tasks(settings, db, [task_id])
    task = rows[task_id]
    assert (task["status"], task["attempt"]) == ("completed", 2)
    ws = task["result"]["workspace"]
    text = run_git(Layout.of(settings.state_dir, "app").mirror, "show",
                   f"{ws['head']}:progress.txt")
    assert text == f"step 1\nstep 2 in {ws['path']}"
    assert ws["branch"] == f"echo/cto/task-{task_id}"


async def test_the_merge_queue_lands_one_branch_and_catches_a_conflict(
        settings: Settings, db: Database, source: Path) -> None:
    before = snapshot(source)
    async with Client(settings, database=db) as client:
        async with client.repos() as repos:
            await repos.add("app", str(source), test_command=f"{sys.executable} -c pass")
        first = await submit(client, writes(**{"app.txt": "v2 by the cto\n"}))
        second = await submit(client, writes(**{"app.txt": "v2 by the ceo\n"}), role="ceo")
        rows = await run_tasks(settings, db, [first, second])
        async with client.repos() as repos:
            steps = await repos.merge("app")
            again = await repos.merge("app")
            shown = await repos.show("app")
        history = {h.action for h in (await client.task(second)).history}
        sent_back = await TaskQueue(db).get(second)
        # Its next run continues in its worktree with main merged in (conflict markers
        # left); this command resolves app.txt by writing its own version again.
        rows2 = await run_tasks(settings, db, [second])
        async with client.repos() as repos:
            resolved = await repos.merge("app")
    assert [(s.task_id, s.status, s.sent_back) for s in steps] == \
        [(first, "merged", False), (second, "failed", True)]
    assert steps[1].reason is not None and "conflict with main" in steps[1].reason
    assert "app.txt" in steps[1].reason
    assert again == []  # nothing new to take up: the failed one is back in the queue
    assert sent_back["status"] == "pending"
    assert sent_back["payload"]["merge_failure"] == steps[1].reason
    assert sent_back["payload"]["merge_attempts"] == 1
    ws2 = rows2[second]["result"]["workspace"]
    assert ws2["path"] == rows[second]["result"]["workspace"]["path"]  # the same worktree
    assert ws2["base_commit"] == steps[0].merged_commit and ws2["files"] == ["app.txt"]
    assert [(s.task_id, s.status) for s in resolved] == [(second, "merged")]
    mirror = Layout.of(settings.state_dir, "app").mirror
    assert run_git(mirror, "rev-parse", f"{steps[0].merged_commit}~1") == before["head"]
    assert run_git(mirror, "rev-parse", "refs/heads/main") == resolved[0].merged_commit
    assert run_git(mirror, "show", "main:app.txt") == "v2 by the ceo"
    assert rows[first]["status"] == "completed"
    assert snapshot(source) == before  # no push configured: the user's repository unchanged
    assert shown.fetch_hint == f"git fetch {mirror} main"
    assert [m["status"] for m in shown.merges] == ["failed", "merged"]  # newest first
    assert {"merge.merging", "merge.failed"} <= history
    assert not (Layout.of(settings.state_dir, "app").merges / f"task-{first}").exists()


async def test_a_red_test_command_blocks_the_merge(
        settings: Settings, db: Database, source: Path) -> None:
    check = (f"{sys.executable} -c \"import pathlib, sys; "
             "sys.exit('app.txt must not say broken' if 'broken' in "
             "pathlib.Path('app.txt').read_text() else 0)\"")
    async with Client(settings, database=db) as client:
        async with client.repos() as repos:
            await repos.add("app", str(source), test_command=check)
        task_id = await submit(client, [sys.executable, "-c",  # each attempt breaks it anew
                                        "import os, pathlib; pathlib.Path('app.txt').write_text("
                                        "'broken ' + os.environ['ECHO_TASK_ATTEMPT'])"])
        await run_tasks(settings, db, [task_id])
        async with client.repos() as repos:
            steps = await repos.merge("app")
    assert [(s.status, s.sent_back) for s in steps] == [("failed", True)]
    assert steps[0].reason is not None and "failed (status 1)" in steps[0].reason
    assert "app.txt must not say broken" in steps[0].reason
    mirror = Layout.of(settings.state_dir, "app").mirror
    assert run_git(mirror, "show", "main:app.txt") == "v1"  # the base did not move
    merged = await run_cli(settings, "repo", "merge", "app")
    assert merged.returncode == 0 and "nothing to merge" in merged.stdout  # sent back
    # Sent back as many times as allowed, the next failure stays for a person.
    await run_tasks(settings, db, [task_id])
    async with Client(settings, database=db) as client, client.repos() as repos:
        last = await repos.merge("app", max_send_backs=1)
    assert [(s.status, s.sent_back) for s in last] == [("failed", False)]
    assert (await TaskQueue(db).get(task_id))["status"] == "completed"


async def test_gc_removes_worktrees_of_long_finished_and_vanished_tasks(
        settings: Settings, db: Database, source: Path) -> None:
    async with Client(settings, database=db) as client:
        async with client.repos() as repos:
            await repos.add("app", str(source))
        kept = await submit(client, writes(**{"a.txt": "a\n"}))
        gone = await submit(client, writes(**{"b.txt": "b\n"}))
        await run_tasks(settings, db, [kept, gone])
        async with db.transaction() as conn:
            await conn.execute("DELETE FROM agent_tasks WHERE task_id = $1", gone)
        layout = Layout.of(settings.state_dir, "app")
        async with client.repos() as repos:
            first = await repos.gc(retention=timedelta(days=1))
            still = layout.worktree(kept).exists()
            size = (await repos.show("app")).disk_bytes
            later = await repos.gc(retention=timedelta(days=1),
                                   now=datetime.now(UTC) + timedelta(days=2))
    assert [(r["task_id"], r["reason"]) for r in first.removed] == [(gone, "task gone")]
    assert first.kept == 1 and still
    assert size > 0
    assert [r["task_id"] for r in later.removed] == [kept]
    assert not layout.worktree(kept).exists() and not layout.worktree(gone).exists()
    assert run_git(layout.mirror, "worktree", "list").count("\n") == 0  # the mirror alone
