"""Work in real repositories: a worktree per task, results as commits, a merge queue.

    repo = check_source("app", "/path/to/app", None)      # what `repo add` stores
    ws = open_workspace(state_dir, repo, task_id, "cto")  # its own worktree and branch
    change = commit_result(ws, description="...")         # the run's result, a commit
    outcome = await merge_branch(state_dir, repo, task_id, change.head)

`WorkspaceExecutor` puts the three together around any executor. Everything runs real
`git` on a bare mirror of the user's repository under the state directory: nothing
here ever writes to the user's own checkout. `RepositoryStore` holds the definitions
and the merge queue's record in Postgres.
"""

from echo.work.workspaces.executor import (
    RESERVED_KEYS,
    WorkspaceExecutor,
    task_repository,
    workspace_for,
)
from echo.work.workspaces.merge import MergeOutcome, merge_branch
from echo.work.workspaces.repository import (
    Layout,
    Repository,
    check_name,
    check_source,
    disk_usage,
    ensure_mirror,
    workspace_place,
)
from echo.work.workspaces.store import RepositoryStore
from echo.work.workspaces.workspace import (
    Change,
    Workspace,
    branch_name,
    commit_result,
    diff,
    has_commit,
    open_workspace,
    read_meta,
    remove_workspace,
    task_ids,
)

__all__ = [
    "RESERVED_KEYS",
    "Change",
    "Layout",
    "MergeOutcome",
    "Repository",
    "RepositoryStore",
    "Workspace",
    "WorkspaceExecutor",
    "branch_name",
    "check_name",
    "check_source",
    "commit_result",
    "diff",
    "disk_usage",
    "ensure_mirror",
    "has_commit",
    "merge_branch",
    "open_workspace",
    "read_meta",
    "remove_workspace",
    "task_ids",
    "task_repository",
    "workspace_for",
    "workspace_place",
]
