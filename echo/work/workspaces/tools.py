"""What a Claude run may do inside a task's worktree.

Outside a workspace a role runs with its `[claude] allowed_tools` (read-only by
default). In a workspace (`payload["workspace"]`, set by `WorkspaceExecutor`) it runs
with `--permission-mode acceptEdits`, which lets it edit files in its working
directory (the worktree) and nowhere else, and with the role's `[workspace] tools`
(default: Read, Edit, Write, Glob, Grep and git) plus the repository's test command
as a `Bash(...)` pattern. `--dangerously-skip-permissions` stays what the role's
`[claude] skip_permissions` says: a task cannot ask for it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from echo.work.tasks import Task

if TYPE_CHECKING:
    from echo.work.claude import ClaudeRunOptions

#: Used when the role's options say nothing (a role-less task).
DEFAULT_TOOLS = ("Read", "Edit", "Write", "Glob", "Grep", "Bash(git status:*)",
                 "Bash(git diff:*)", "Bash(git log:*)", "Bash(git show:*)",
                 "Bash(git add:*)", "Bash(git commit:*)")


def in_workspace(options: ClaudeRunOptions, task: Task) -> ClaudeRunOptions:
    """`options` for a run in the task's worktree; unchanged for a task without one."""
    if not task.payload.get("workspace"):
        return options
    tools = list(options.workspace_tools if options.workspace_tools is not None else DEFAULT_TOOLS)
    repo = task.payload.get("repo")
    test = repo.get("test_command") if isinstance(repo, dict) else None
    if isinstance(test, str) and test.strip():
        tools.append(f"Bash({' '.join(test.split())}:*)")
    return replace(options, allowed_tools=tuple(dict.fromkeys(tools)),
                   permission_mode="acceptEdits")
