"""A task's workspace: its own git worktree on its own branch, and its result commit.

A task with a repository runs in `<root>/tasks/task-<id>`, a worktree of the mirror
on the branch `echo/<role>/task-<id>`, made from the integration branch's tip under
the repository's lock. Beside it, `task-<id>.json` records the branch, the base and
the commit it started from (`base_commit`), so the result's diff, `repo gc` and a
retry all know it without the database.

Continuity: a retry of the task on this machine (or a resumed run) finds the
worktree and continues in it, uncommitted edits included; if the worktree was
removed but the branch is still in the mirror, it is checked out again. For a
repository added with `--push`, every attempt pushes the task's branch to the
repository (a failed attempt's edits first as a checkpoint commit), so a retry on
another machine, whose mirror fetched that branch, continues from it there.

The result is a commit: whatever the run left uncommitted is committed on the branch
with the role as its author (`cto <cto@echo.local>`) and the task as its message.
"""

from __future__ import annotations

import json
import shutil
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from echo.errors import WorkspaceError
from echo.work.workspaces.git import git, ok, out
from echo.work.workspaces.repository import Layout, Repository, ensure_mirror

#: Lines of a diff stat kept in a task's result (the full diff is `tasks diff ID`).
STAT_LINES = 50


def branch_name(role: str | None, task_id: int) -> str:
    return f"echo/{role or 'task'}/task-{task_id}"


def author_of(role: str | None) -> tuple[str, str]:
    name = role or "echo"
    return name, f"{name}@echo.local"


@dataclass(frozen=True)
class Workspace:
    """A task's worktree, as `open_workspace` made or found it."""

    repo: str
    task_id: int
    role: str | None
    path: Path
    branch: str
    base_branch: str
    base_commit: str
    created_at: str
    reused: bool = field(default=False, compare=False)

    def meta(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data.pop("reused")
        return data


@dataclass(frozen=True)
class Change:
    """What a task's run left on its branch: stored as its result's `workspace`."""

    repo: str
    branch: str
    base_branch: str
    base_commit: str
    head: str
    changed: bool
    committed: bool  # ECHO committed what the run left uncommitted
    files: list[str]
    diffstat: str
    path: str
    pushed: bool = False  # the branch is in the repository too (`repo add --push`)
    host: str = field(default_factory=socket.gethostname)  # the machine with the worktree

    def as_result(self) -> dict[str, Any]:
        return asdict(self)


def open_workspace(state_dir: Path, repo: Repository, task_id: int, role: str | None) -> Workspace:
    """The task's worktree: reused if this machine has it, else made from the base tip
    (or from the task's branch, when the mirror still has it).

    Only what touches the mirror's refs and config (fetch, `worktree add
    --no-checkout`) holds the repository's lock; the checkout of the files, the slow
    part on a large repository, writes only the worktree's own index and files and runs
    outside it, so concurrent set-ups overlap. The record is written last: a worktree
    without one (a set-up that died) is made again."""
    layout = Layout.of(state_dir, repo.name)
    path, branch = layout.worktree(task_id), branch_name(role, task_id)
    with layout.lock():
        mirror = ensure_mirror(layout, repo)
        found = _existing(layout, task_id, branch)
        if found is not None:
            _catch_up_with_push(found, mirror)
            return found
        if path.exists():  # a worktree git no longer knows (or half made): start clean
            shutil.rmtree(path)
        git(["worktree", "prune"], cwd=mirror)
        layout.tasks.mkdir(parents=True, exist_ok=True)
        base_ref = f"refs/heads/{repo.base_branch}"
        pushed = f"refs/remotes/origin/{branch}"  # an attempt on another machine pushed it
        if not ok(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], cwd=mirror) \
                and ok(["rev-parse", "--verify", "--quiet", pushed], cwd=mirror):
            git(["update-ref", f"refs/heads/{branch}", pushed], cwd=mirror)
        if ok(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], cwd=mirror):
            git(["worktree", "add", "--quiet", "--no-checkout", str(path), branch], cwd=mirror)
            base_commit = out(["merge-base", base_ref, branch], cwd=mirror)
        else:
            base_commit = out(["rev-parse", base_ref], cwd=mirror)
            git(["worktree", "add", "--quiet", "--no-checkout", "-b", branch, str(path),
                 base_commit], cwd=mirror)
    git(["reset", "--quiet", "--hard"], cwd=path)  # the checkout, outside the lock
    ws = Workspace(repo.name, task_id, role, path, branch, repo.base_branch, base_commit,
                   datetime.now(UTC).isoformat())
    layout.meta(task_id).write_text(json.dumps(ws.meta(), indent=2))
    return ws


def _catch_up_with_push(ws: Workspace, mirror: Path) -> None:
    """A worktree reused on this machine after a retry ran (and pushed) elsewhere: move
    it on to the pushed branch when that only adds to it and nothing here is
    uncommitted; otherwise leave it, and its push will be refused, not overwrite."""
    pushed = f"refs/remotes/origin/{ws.branch}"
    if not ok(["rev-parse", "--verify", "--quiet", pushed], cwd=mirror):
        return
    if ok(["merge-base", "--is-ancestor", pushed, "HEAD"], cwd=ws.path):
        return  # nothing new there
    clean = not out(["status", "--porcelain"], cwd=ws.path)
    if clean and ok(["merge-base", "--is-ancestor", "HEAD", pushed], cwd=ws.path):
        git(["merge", "--quiet", "--ff-only", pushed], cwd=ws.path)


def _existing(layout: Layout, task_id: int, branch: str) -> Workspace | None:
    path, meta = layout.worktree(task_id), layout.meta(task_id)
    if not (path / ".git").exists() or not meta.is_file():
        return None
    head = git(["symbolic-ref", "--quiet", "--short", "HEAD"], cwd=path, check=False)
    if head.returncode != 0 or head.stdout.strip() != branch:
        return None
    data = json.loads(meta.read_text())
    return Workspace(data["repo"], task_id, data.get("role"), path, branch, data["base_branch"],
                     data["base_commit"], data["created_at"], reused=True)


def catch_up(ws: Workspace) -> list[str]:
    """Merge the current base into the task's branch (a task the merge queue sent back
    continues from where the base is now). Returns the files left in conflict, with
    their markers, for the run to resolve; its result commit then completes the merge.
    Idempotent: a merge already under way, or a base already in the branch, is left."""
    path = ws.path
    if ok(["rev-parse", "--verify", "--quiet", "MERGE_HEAD"], cwd=path):
        return out(["diff", "--name-only", "--diff-filter=U"], cwd=path).split()
    base = f"refs/heads/{ws.base_branch}"
    if ok(["merge-base", "--is-ancestor", base, "HEAD"], cwd=path):
        return []
    name, email = author_of(ws.role)
    done = git(["merge", "--quiet", "--no-edit", base], cwd=path, check=False,
               env={"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
                    "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email})
    if done.returncode == 0:
        return []
    return out(["diff", "--name-only", "--diff-filter=U"], cwd=path).split()


def read_meta(layout: Layout, task_id: int) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(layout.meta(task_id).read_text())
        return data
    except (OSError, ValueError):
        return None


def commit_result(ws: Workspace, *, description: str) -> Change:
    """Commit whatever is left uncommitted in the worktree on its branch (author: the
    role), and describe the branch against the commit it started from."""
    path = ws.path
    git(["add", "--all"], cwd=path)
    pending = git(["diff", "--cached", "--quiet"], cwd=path, check=False).returncode == 1 \
        or ok(["rev-parse", "--verify", "--quiet", "MERGE_HEAD"], cwd=path)  # finish a catch-up
    if pending:
        name, email = author_of(ws.role)
        title = " ".join(description.split())[:72] or f"task {ws.task_id}"
        message = f"{title}\n\n{description.strip()}\n\nECHO-Task: {ws.task_id}\n"
        git(["commit", "--quiet", "--no-verify", "-m", message], cwd=path,
            env={"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
                 "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email})
    head = out(["rev-parse", "HEAD"], cwd=path)
    # Since where the base is in the branch (it moves when a sent-back task merged the
    # base in), unless the branch is already in the base: then since it started.
    since = out(["merge-base", f"refs/heads/{ws.base_branch}", head], cwd=path)
    if since == head:
        since = ws.base_commit
    files = out(["diff", "--name-only", since, head], cwd=path).splitlines()
    stat = out(["diff", "--stat", since, head], cwd=path).splitlines()
    if len(stat) > STAT_LINES:
        stat = [*stat[:STAT_LINES - 1], f"... ({len(stat) - STAT_LINES + 1} more lines)", stat[-1]]
    return Change(repo=ws.repo, branch=ws.branch, base_branch=ws.base_branch,
                  base_commit=since, head=head, changed=head != since,
                  committed=pending, files=files, diffstat="\n".join(stat), path=str(path))


def checkpoint(ws: Workspace, *, attempt: int) -> bool:
    """Commit what a failed attempt left in the worktree, so that pushing the branch
    carries it to whichever machine runs the retry. True if there was anything."""
    git(["add", "--all"], cwd=ws.path)
    if git(["diff", "--cached", "--quiet"], cwd=ws.path, check=False).returncode == 0:
        return False
    name, email = author_of(ws.role)
    git(["commit", "--quiet", "--no-verify", "-m",
         f"wip: task {ws.task_id}, attempt {attempt} (continued by its retry)\n\n"
         f"ECHO-Task: {ws.task_id}\n"], cwd=ws.path,
        env={"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
             "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email})
    return True


def push_branch(ws: Workspace, state_dir: Path) -> str | None:
    """Push the task's branch to the repository (it is the task's alone: forced, and
    only that ref). None when it went, else git's reason in one line (the task goes
    on: it can still continue on this machine)."""
    mirror = Layout.of(state_dir, ws.repo).mirror
    ref, theirs = f"refs/heads/{ws.branch}", f"refs/remotes/origin/{ws.branch}"
    # Forced only over what this machine last saw of it: if another machine pushed the
    # branch since (a retry ran there), the push is refused rather than its work lost.
    seen = git(["rev-parse", "--verify", "--quiet", theirs], cwd=mirror, check=False).stdout.strip()
    done = git(["push", "--quiet", f"--force-with-lease={ref}:{seen}", "origin",
                f"{ref}:{ref}"], cwd=mirror, check=False, timeout=300)
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or [f"git push exited {done.returncode}"])[-1]
    # what the other machines' mirrors will fetch: the same ref as the repository has it
    git(["update-ref", f"refs/remotes/origin/{ws.branch}", ref], cwd=mirror)
    return None


def remove_workspace(state_dir: Path, repo_name: str, task_id: int, *,
                     delete_branch: bool = False) -> bool:
    """Remove a task's worktree (and its record; its branch too if asked). True if
    there was one."""
    layout = Layout.of(state_dir, repo_name)
    path, meta = layout.worktree(task_id), layout.meta(task_id)
    if not path.exists() and not meta.exists():
        return False
    data = read_meta(layout, task_id) or {}
    with layout.lock():
        if layout.mirror.is_dir():
            if path.exists():
                git(["worktree", "remove", "--force", str(path)], cwd=layout.mirror, check=False)
            git(["worktree", "prune"], cwd=layout.mirror, check=False)
            if delete_branch and data.get("branch"):
                git(["branch", "--quiet", "-D", data["branch"]], cwd=layout.mirror, check=False)
        shutil.rmtree(path, ignore_errors=True)
        meta.unlink(missing_ok=True)
    return True


def task_ids(state_dir: Path, repo_name: str) -> list[int]:
    """The tasks that have a worktree (or its record) of this repository here."""
    layout = Layout.of(state_dir, repo_name)
    if not layout.tasks.is_dir():
        return []
    found = set()
    for entry in layout.tasks.iterdir():
        stem = entry.name.removesuffix(".json")
        if stem.startswith("task-") and stem[5:].isdigit():
            found.add(int(stem[5:]))
    return sorted(found)


def has_commit(state_dir: Path, repo_name: str, commit: str) -> bool:
    """Whether this machine's mirror of the repository holds `commit` (a task that ran
    on another machine is that machine's to merge)."""
    mirror = Layout.of(state_dir, repo_name).mirror
    return (mirror / "HEAD").is_file() and ok(["cat-file", "-e", f"{commit}^{{commit}}"],
                                              cwd=mirror)


def diff(state_dir: Path, repo_name: str, base_commit: str, head: str) -> str:
    """The diff of a task's branch, read from the mirror (never the user's checkout)."""
    layout = Layout.of(state_dir, repo_name)
    if not (layout.mirror / "HEAD").is_file():
        raise WorkspaceError(f"repository {repo_name} has no mirror on this machine "
                             f"({layout.mirror}); run `echoctl tasks diff` where the task ran")
    if not ok(["cat-file", "-e", f"{head}^{{commit}}"], cwd=layout.mirror):
        raise WorkspaceError(f"commit {head[:12]} is not in the mirror {layout.mirror}")
    return git(["diff", base_commit, head], cwd=layout.mirror).stdout
