"""The merge queue's one step: land a task's branch on the integration branch.

Merges of one repository run one at a time (the repository's `merge` lock, held for
the whole step). A step:

1. makes a clean, detached worktree of the task's head under `<root>/merge/`;
2. rebases it onto the current tip of the base in the mirror (where that conflicts,
   merges it into the tip: a branch that resolved a conflict by merging the base in);
   a conflict both ways fails the step, naming the conflicting files;
3. runs the repository's test command there (split with `shlex`, no shell, its own
   process group, a timeout, a scrubbed environment); a non-zero exit, a signal or
   the timeout fails the step with the command's last line;
4. fast-forwards the base in the mirror to the rebased head, by compare-and-swap on
   the tip it started from (under the repository lock), and pushes it to the user's
   repository only when the repository says `push`.

The worktree is removed whatever happened. Nothing here touches the database: the
caller records each step (`repository_merges`, audit rows).
"""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import anyio

from echo.errors import WorkspaceError
from echo.work.process import run_process, scrubbed_env
from echo.work.workspaces.git import git, last_line, ok, out
from echo.work.workspaces.repository import Layout, Repository, ensure_mirror


@dataclass(frozen=True)
class MergeOutcome:
    status: str  # merged | failed
    reason: str | None = None
    merged_commit: str | None = None
    pushed: bool = False


async def merge_branch(state_dir: Path, repo: Repository, task_id: int, head: str, *,
                       test_timeout: float = 600.0) -> MergeOutcome:
    """One merge step for the task's `head` (see the module docstring)."""
    layout = Layout.of(state_dir, repo.name)
    fd = await anyio.to_thread.run_sync(layout.acquire, "merge")
    try:
        return await _merge(layout, repo, task_id, head, test_timeout)
    finally:
        os.close(fd)


async def _merge(layout: Layout, repo: Repository, task_id: int, head: str,
                 test_timeout: float) -> MergeOutcome:
    base_ref = f"refs/heads/{repo.base_branch}"
    path = layout.merges / f"task-{task_id}"

    def prepare() -> str:
        with layout.lock():
            mirror = ensure_mirror(layout, repo)
            if not ok(["cat-file", "-e", f"{head}^{{commit}}"], cwd=mirror):
                raise WorkspaceError(f"task {task_id}: commit {head[:12]} is not in the mirror")
            _drop(layout, path)
            layout.merges.mkdir(parents=True, exist_ok=True)
            git(["worktree", "add", "--quiet", "--detach", str(path), head], cwd=mirror)
            return out(["rev-parse", base_ref], cwd=mirror)

    tip = await anyio.to_thread.run_sync(prepare)
    try:
        rebased = await anyio.to_thread.run_sync(_rebase, path, tip, repo.base_branch)
        if isinstance(rebased, MergeOutcome):
            return rebased
        if repo.test_command:
            failed = await _test(path, repo.test_command, test_timeout)
            if failed is not None:
                return MergeOutcome("failed", failed)
        return await anyio.to_thread.run_sync(_land, layout, repo, tip, rebased)
    finally:
        def drop() -> None:
            with layout.lock():
                _drop(layout, path)

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(drop)


def _rebase(path: Path, tip: str, base_branch: str) -> str | MergeOutcome:
    """Rebase the head onto the tip; where that conflicts, merge it into the tip instead
    (a branch that resolved an earlier conflict by merging the base in replays cleanly
    only as a merge). Both conflicting: failed, naming the files."""
    head = out(["rev-parse", "HEAD"], cwd=path)
    done = git(["rebase", "--quiet", tip], cwd=path, check=False)
    if done.returncode == 0:
        return out(["rev-parse", "HEAD"], cwd=path)
    conflicts = out(["diff", "--name-only", "--diff-filter=U"], cwd=path).split()
    git(["rebase", "--abort"], cwd=path, check=False)
    git(["checkout", "--quiet", "--detach", tip], cwd=path)
    merged = git(["merge", "--quiet", "--no-edit", "-m", f"Merge {head[:12]} into {base_branch}",
                  head], cwd=path, check=False)
    if merged.returncode == 0:
        return out(["rev-parse", "HEAD"], cwd=path)
    git(["merge", "--abort"], cwd=path, check=False)
    what = ", ".join(conflicts[:10]) if conflicts else last_line(done)
    return MergeOutcome("failed", f"conflict with {base_branch} at {tip[:12]}: {what}")


async def _test(path: Path, command: str, time_limit: float) -> str | None:
    """None if the test command passes, else why not, in one line."""
    argv = shlex.split(command)
    try:
        done = await run_process(argv, env=scrubbed_env(), cwd=path, time_limit=time_limit)
    except OSError as exc:
        return f"test command {command!r} cannot run: {exc.strerror or exc}"
    if done.timed_out:
        return f"test command {command!r} did not finish within {time_limit:g}s"
    if done.signal is not None:
        return f"test command {command!r} was killed by signal {done.signal}"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        tail = lines[-1][:300] if lines else ""
        return f"test command {command!r} failed (status {done.returncode})" + \
            (f": {tail}" if tail else "")
    return None


def _land(layout: Layout, repo: Repository, tip: str, rebased: str) -> MergeOutcome:
    base_ref = f"refs/heads/{repo.base_branch}"
    with layout.lock():
        moved = git(["update-ref", base_ref, rebased, tip], cwd=layout.mirror, check=False)
        if moved.returncode != 0:
            return MergeOutcome("failed", f"{repo.base_branch} moved during the merge; "
                                          "run the queue again")
    if not repo.push:
        return MergeOutcome("merged", None, rebased)
    pushed = git(["push", "--quiet", "origin", f"{rebased}:{base_ref}"], cwd=layout.mirror,
                 check=False, timeout=300)
    if pushed.returncode != 0:
        return MergeOutcome("merged", f"merged in the mirror; push to {repo.source} failed: "
                                      f"{last_line(pushed)}", rebased)
    return MergeOutcome("merged", None, rebased, pushed=True)


def _drop(layout: Layout, path: Path) -> None:
    if layout.mirror.is_dir() and path.exists():
        git(["worktree", "remove", "--force", str(path)], cwd=layout.mirror, check=False)
    shutil.rmtree(path, ignore_errors=True)
    if layout.mirror.is_dir():
        git(["worktree", "prune"], cwd=layout.mirror, check=False)
