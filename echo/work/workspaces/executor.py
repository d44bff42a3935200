"""`WorkspaceExecutor`: runs a task that names a repository inside its own worktree.

It wraps the executor that does the work (Claude, a command). For a task whose
payload carries `repo` (set by `tasks submit --repo`), it opens the task's workspace
(`open_workspace`: made, or reused on a retry), hands the inner executor the task
with `payload["workspace"]` (and `cwd`) set to the worktree, and when the run
succeeds commits what it left on the task's branch. The result is the inner one with
`workspace` added: repo, branch, base and head commits, files changed, a diff stat.
A task without a repository passes straight through.

A failed run commits nothing: its edits stay in the worktree, where its retry
continues. In a repository added with `--push`, every attempt pushes the task's
branch (a failed one's edits first committed as a checkpoint), so its retry can
continue on another machine; without a push, a retry elsewhere starts from the base.
A task the merge queue sent back (`payload["merge_failure"]`) first gets
the current base merged into its branch (conflict markers left for the run to
resolve) and the failure appended to its prompt.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import anyio

from echo.errors import WorkspaceError
from echo.work.executors import Executor, Result
from echo.work.tasks import Task
from echo.work.workspaces.repository import Layout, Repository
from echo.work.workspaces.workspace import (
    Workspace,
    catch_up,
    checkpoint,
    commit_result,
    open_workspace,
    push_branch,
    read_meta,
)

log = logging.getLogger(__name__)

#: Payload keys ECHO sets itself (`--repo`, the executor, the merge queue): a
#: submitted payload may not.
RESERVED_KEYS = ("repo", "workspace", "merge_failure", "merge_attempts")


def task_repository(task: Task) -> Repository | None:
    spec = task.payload.get("repo")
    return Repository.from_payload(spec) if isinstance(spec, dict) else None


def workspace_for(task: Task, state_dir: Path) -> Path | None:
    """The worktree of `task` on this machine, if it has one (a resumed run continues
    there); None for a task without a repository or a worktree here."""
    repo = task_repository(task)
    if repo is None:
        return None
    layout = Layout.of(state_dir, repo.name)
    path = layout.worktree(task.task_id)
    return path if (path / ".git").exists() and read_meta(layout, task.task_id) else None


def sent_back_prompt(task: Task, base: str, failure: str, conflicts: list[str]) -> str:
    """The prompt of a task the merge queue sent back: the task, then why it came back."""
    original = str(task.payload.get("prompt") or task.description)
    note = f"\n\n[echo] Your last result could not be merged into {base}: {failure}."
    if conflicts:
        note += (f" {base} is now merged into your branch, with conflicts in: "
                 f"{', '.join(conflicts)}. Resolve the conflict markers there, keeping both "
                 "changes' intent.")
    else:
        note += " Fix this in your branch; the repository's test command must pass."
    return original + note


class WorkspaceExecutor:
    """`inner` in the task's worktree when the task has a repository (see the module)."""

    def __init__(self, inner: Executor, state_dir: Path) -> None:
        self.inner = inner
        self.state_dir = Path(state_dir)

    def __getattr__(self, name: str) -> object:  # `binary()`, `options_for()` of the inner
        return getattr(self.inner, name)

    async def execute(self, task: Task) -> Result:
        repo = task_repository(task)
        if repo is None:  # `workspace` is this executor's to set, never a payload's
            if "workspace" in task.payload:
                task = dataclasses.replace(task, payload={
                    k: v for k, v in task.payload.items() if k != "workspace"})
            return await self.inner.execute(task)
        ws = await anyio.to_thread.run_sync(open_workspace, self.state_dir, repo, task.task_id,
                                            task.role)
        payload = {**task.payload, "workspace": str(ws.path), "cwd": str(ws.path)}
        failure = task.payload.get("merge_failure")
        if isinstance(failure, str):
            conflicts = await anyio.to_thread.run_sync(catch_up, ws)
            payload["prompt"] = sent_back_prompt(task, ws.base_branch, failure, conflicts)
        inside = dataclasses.replace(task, payload=payload)
        try:
            result = await self.inner.execute(inside)
        except Exception:
            if repo.push:  # the retry may run on another machine: take the edits there
                await anyio.to_thread.run_sync(self._hand_on, ws, task.attempt)
            raise
        change = await anyio.to_thread.run_sync(
            lambda: commit_result(ws, description=task.description))
        if repo.push:
            failed = await anyio.to_thread.run_sync(push_branch, ws, self.state_dir)
            if failed is None:
                change = dataclasses.replace(change, pushed=True)
            else:
                log.warning("task %s: its branch %s stays on this machine: %s", task.task_id,
                            ws.branch, failed)
        output = result.output if isinstance(result.output, dict) else {"output": result.output}
        return dataclasses.replace(result, output={**output, "workspace": change.as_result()})

    def _hand_on(self, ws: Workspace, attempt: int) -> None:
        """A failed attempt's edits, committed and pushed for its retry (best effort:
        the failure being raised is the task's, not this)."""
        try:
            checkpoint(ws, attempt=attempt)
            failed = push_branch(ws, self.state_dir)
        except WorkspaceError as exc:
            failed = str(exc)
        if failed is not None:
            log.warning("task %s: attempt %s's edits stay on this machine: %s", ws.task_id,
                        attempt, failed)
