"""What a Claude run may do in a task's worktree, and what a sent-back task is told:
pure logic, no git, no services."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from echo.work.claude import ClaudeRunOptions
from echo.work.tasks import Task
from echo.work.workspaces.executor import sent_back_prompt
from echo.work.workspaces.tools import DEFAULT_TOOLS, in_workspace


def task(**payload: Any) -> Task:
    return Task(task_id=7, task_type="claude", description="Fix the login page", priority=0,
                role="cto", worker_id="h:1:0", attempt=1, timeout_seconds=60, max_retries=1,
                retry_count=0, payload=payload, started_at=datetime.now(UTC))


def test_outside_a_workspace_the_role_options_are_unchanged() -> None:
    options = ClaudeRunOptions(allowed_tools=("Read",))
    assert in_workspace(options, task(repo={"name": "app"})) is options


def test_in_a_workspace_edits_are_accepted_with_the_workspace_tools_and_the_test_command() -> None:
    options = ClaudeRunOptions(allowed_tools=("Read",), workspace_tools=("Read", "Edit"))
    inside = in_workspace(options, task(workspace="/w", repo={"test_command": "pytest  -q"}))
    assert inside.permission_mode == "acceptEdits"
    assert inside.allowed_tools == ("Read", "Edit", "Bash(pytest -q:*)")
    assert not inside.skip_permissions
    role_less = in_workspace(ClaudeRunOptions(), task(workspace="/w"))
    assert role_less.allowed_tools == DEFAULT_TOOLS


def test_a_sent_back_task_is_told_why_and_where_the_conflicts_are() -> None:
    prompt = sent_back_prompt(task(), "main", "conflict with main at abc: app.txt", ["app.txt"])
    assert prompt.startswith("Fix the login page\n\n[echo] Your last result could not be merged")
    assert "conflict with main at abc: app.txt" in prompt and "conflicts in: app.txt" in prompt
    red = sent_back_prompt(task(prompt="Do X"), "main", "test command 'make' failed", [])
    assert red.startswith("Do X") and "test command must pass" in red


async def test_a_payload_cannot_choose_a_workspace_for_a_task_without_a_repository(
        tmp_path: Any) -> None:
    from echo.work.executors import Result
    from echo.work.workspaces import WorkspaceExecutor

    seen: list[Task] = []

    class Recording:
        async def execute(self, t: Task) -> Result:
            seen.append(t)
            return Result({"ok": True})

    executor = WorkspaceExecutor(Recording(), tmp_path)
    await executor.execute(task(workspace="/etc", prompt="hi"))
    assert seen[0].payload == {"prompt": "hi"}  # so no acceptEdits anywhere a payload says
