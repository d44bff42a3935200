"""A task in a repository with the REAL `claude` CLI against the fake Anthropic API:
the CLI runs in the task's worktree (the working directory it tells the API is the
worktree, not the worker's), with `--permission-mode acceptEdits` and the workspace
tools, and a run that edits nothing ends as `no changes` on its own branch."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from echo.config import Settings
from echo.db import Database
from echo.org.client import Client
from echo.runtime import Backoff
from echo.work import ClaudeExecutor, ClaudeRunOptions, ExecutorPool, TaskQueue
from echo.work.claude_cli import LOCAL_CLAUDE
from echo.work.workspaces import Layout, WorkspaceExecutor
from tests.conftest import unavailable
from tests.fakes.anthropic import FakeAnthropic, text
from tests.helpers import wait_until
from tests.integration.workspaces.gitrepo import snapshot, user_repo

pytestmark = pytest.mark.e2e


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAnthropic]:
    if not os.access(LOCAL_CLAUDE, os.X_OK):
        unavailable(f"the pinned Claude CLI is not installed at {LOCAL_CLAUDE}; run `make setup`")
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
                 "ANTHROPIC_BASE_URL", "CLAUDECODE"):
        monkeypatch.delenv(name, raising=False)
    with FakeAnthropic() as fake:
        yield fake


async def test_claude_runs_in_the_task_worktree_and_an_unchanged_run_says_so(
        settings: Settings, db: Database, api: FakeAnthropic, tmp_path: Path) -> None:
    source = user_repo(tmp_path / "user-app")
    before = snapshot(source)
    home = tmp_path / "home"
    home.mkdir()
    api.script(text("Nothing needs to change."))
    s = settings.model_copy(update={"claude_bin": str(LOCAL_CLAUDE)})
    claude = ClaudeExecutor(s.claude, s.database, options=ClaudeRunOptions(max_turns=2),
                            env={**api.env("sk-ant-test-0123456789"), "HOME": str(home)},
                            config_dir=tmp_path / "claude-config", cwd=tmp_path)
    seen: list[list[str]] = []
    argv = claude.argv

    def recording(binary: str, options: ClaudeRunOptions, *, resume: str | None = None) -> list[str]:
        seen.append(argv(binary, options, resume=resume))
        return seen[-1]

    claude.argv = recording  # type: ignore[method-assign]
    async with Client(s, database=db) as client:
        async with client.repos() as repos:
            await repos.add("app", str(source), test_command="make check")
        task_id = (await client.submit_task("Look at the README", role="cto",
                                            repo="app")).task_id
    q = TaskQueue(db)
    pool = ExecutorPool(s.work, db, {"claude": WorkspaceExecutor(claude, s.state_dir)},
                        concurrency=1, roles=["cto"], backoff=Backoff(initial=0.01, max=0.05))

    async def final() -> bool:
        return (await q.get(task_id))["status"] in ("completed", "failed", "dead")

    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        await wait_until(final, timeout=120, interval=0.1)
        pool.stop()
    task = await q.get(task_id)
    assert task["status"] == "completed", task["error"]
    worktree = Layout.of(s.state_dir, "app").worktree(task_id)
    ws = task["result"]["workspace"]
    assert (ws["path"], ws["branch"], ws["changed"]) == \
        (str(worktree), f"echo/cto/task-{task_id}", False)
    assert task["result"]["result"] == "Nothing needs to change."
    sent = json.dumps([r.body for r in api.message_requests()])
    assert str(worktree) in sent and str(tmp_path) + '"' not in sent
    assert seen[0][seen[0].index("--permission-mode") + 1] == "acceptEdits"
    tools = seen[0][seen[0].index("--allowedTools") + 1].split(",")
    assert {"Read", "Edit", "Write", "Bash(git commit:*)", "Bash(make check:*)"} <= set(tools)
    assert "--dangerously-skip-permissions" not in seen[0]
    assert snapshot(source) == before
