"""Repositories, as a user asks for them: add, list, show, remove, merge, gc, diff.

The client's thin `repo_*` methods call this service; the git work lives in
`echo.work.workspaces`, the SQL behind `RepositoryStore`. Input is checked before
anything is written: `repo add` refuses a path that is not a git repository, a base
branch that does not exist, a detached HEAD or a dirty base checkout in one line
(`BadRepository`, exit 2).

The merge queue is a pass, `merge(name)` (`echoctl repo merge NAME`, and every N
seconds in a worker started with `--merge-every N`): every completed task of the
repository whose branch has a new commit is merged into the integration branch one
at a time (echo.work.workspaces.merge), each step recorded in `repository_merges`
and the audit trail. A pass takes up only the commits this machine's mirror holds:
a task is merged where it ran.
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel

from echo.config import Settings
from echo.db import Database
from echo.errors import BadRepository, EchoError, NotFound, UsageError
from echo.work.approvals import Approval, ApprovalStore
from echo.work.workspaces import (
    Layout,
    Repository,
    RepositoryStore,
    check_name,
    check_source,
    diff,
    disk_usage,
    has_commit,
    merge_branch,
    read_meta,
    remove_workspace,
    task_ids,
)
from echo.work.workspaces.git import git

log = logging.getLogger(__name__)

#: How many times the merge queue sends a task back with its failure (a conflict, a red
#: test) before it leaves the failure for a person (`repo show`).
MAX_SEND_BACKS = 2
#: How long the worktree of a finished task is kept (`repo gc --retention`).
DEFAULT_RETENTION = timedelta(days=7)


class RepoInfo(BaseModel):
    """One repository, with what this machine holds of it."""

    name: str
    source: str
    base_branch: str
    test_command: str | None = None
    push: bool = False
    require_approval: bool = False
    created_at: datetime
    updated_at: datetime
    mirror: str | None = None
    base_commit: str | None = None
    disk_bytes: int = 0
    worktrees: list[int] = []
    merges: list[dict[str, Any]] = []
    fetch_hint: str | None = None


class MergeStep(BaseModel):
    task_id: int
    branch: str
    head: str
    status: str
    reason: str | None = None
    merged_commit: str | None = None
    sent_back: bool = False  # back in the queue, the reason in its next prompt


class GcReport(BaseModel):
    removed: list[dict[str, Any]]
    kept: int


class RepoService:
    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings = settings
        self.store = RepositoryStore(database)
        self.approvals = ApprovalStore(database)

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir

    async def add(self, name: str, source: str, *, base: str | None = None,
                  test_command: str | None = None, push: bool = False,
                  require_approval: bool = False) -> Repository:
        if test_command is not None and not test_command.strip():
            raise UsageError("--test-command is empty; give a command or leave it out")
        checked = await anyio.to_thread.run_sync(check_source, name, source, base)
        repo = Repository(checked.name, checked.source, checked.base_branch,
                          test_command.strip() if test_command else None, push,
                          require_approval)
        if not await self.store.add(repo):
            raise BadRepository(f"repository {name!r} exists already; `echoctl repo remove "
                                f"{name}` first or pick another name")
        return repo

    async def get(self, name: str) -> Repository:
        check_name(name)
        repo = await self.store.get(name)
        if repo is None:
            raise self.unknown(name, await self.store.all())
        return repo

    @staticmethod
    def unknown(name: str, rows: list[dict[str, Any]]) -> BadRepository:
        known = ", ".join(r["name"] for r in rows) or "none yet (`echoctl repo add`)"
        return BadRepository(f"unknown repository {name!r}; known repositories: {known}")

    async def all(self) -> list[RepoInfo]:
        return [RepoInfo.model_validate(r) for r in await self.store.all()]

    async def show(self, name: str) -> RepoInfo:
        check_name(name)
        row = await self.store.row(name)
        if row is None:
            raise self.unknown(name, await self.store.all())
        info = RepoInfo.model_validate(row)
        layout = Layout.of(self.state_dir, name)

        def local() -> dict[str, Any]:
            if not (layout.mirror / "HEAD").is_file():
                return {"disk_bytes": disk_usage(layout.root)}
            tip = git(["rev-parse", "--verify", "--quiet", f"refs/heads/{info.base_branch}"],
                      cwd=layout.mirror, check=False).stdout.strip() or None
            return {"mirror": str(layout.mirror), "base_commit": tip,
                    "disk_bytes": disk_usage(layout.root),
                    "worktrees": task_ids(self.state_dir, name),
                    "fetch_hint": f"git fetch {layout.mirror} {info.base_branch}"}

        found = await anyio.to_thread.run_sync(local)
        merges = await self.store.merges(name)
        return info.model_copy(update={**found, "merges": merges})

    async def remove(self, name: str) -> None:
        """Forget the repository and remove this machine's mirror and worktrees of it."""
        check_name(name)
        if not await self.store.remove(name):
            raise self.unknown(name, await self.store.all())
        layout = Layout.of(self.state_dir, name)

        def purge() -> None:
            with layout.lock():
                shutil.rmtree(layout.mirror, ignore_errors=True)
                shutil.rmtree(layout.tasks, ignore_errors=True)
                shutil.rmtree(layout.merges, ignore_errors=True)

        await anyio.to_thread.run_sync(purge)

    async def payload(self, name: str) -> dict[str, Any]:
        """What `tasks submit --repo NAME` stores in the task's payload."""
        return (await self.get(name)).as_payload()

    async def merge(self, name: str, *, actor: str = "merge-queue", test_timeout: float = 600.0,
                    max_send_backs: int = MAX_SEND_BACKS) -> list[MergeStep]:
        """One pass of the merge queue over `name` (see the module docstring). A failed
        merge sends its task back (at most `max_send_backs` times) with the reason in
        its next prompt; its retry continues in its worktree, the base merged in."""
        repo = await self.get(name)
        steps = []
        for cand in await self.store.candidates(name):
            task_id, branch, head = cand["task_id"], cand["branch"], cand["head"]
            if not await anyio.to_thread.run_sync(has_commit, self.state_dir, name, head):
                continue  # it ran on another machine, whose mirror has it: its pass
            approval = None
            if repo.require_approval:
                approval, held = await self._approval(repo, cand, actor=actor)
                if held is not None:
                    steps.append(held)
                    continue
            await self.store.start_merge(task_id, name, branch, head, actor=actor)
            try:
                outcome = await merge_branch(self.state_dir, repo, task_id, head,
                                             test_timeout=test_timeout)
            except BaseException as exc:  # recorded, then raised: never left `merging`
                with anyio.CancelScope(shield=True):
                    await self.store.finish_merge(task_id, "failed", f"merge stopped: {exc}",
                                                  None, actor=actor)
                raise
            if approval is not None:  # taken by this attempt: a new head asks again
                await self.approvals.use(approval.id)
            again = cand["merge_attempts"] + 1 if outcome.status == "failed" and \
                cand["merge_attempts"] < max_send_backs else None
            sent = await self.store.finish_merge(task_id, outcome.status, outcome.reason,
                                                 outcome.merged_commit, actor=actor,
                                                 send_back=again)
            steps.append(MergeStep(task_id=task_id, branch=branch, head=head,
                                   status=outcome.status, reason=outcome.reason,
                                   merged_commit=outcome.merged_commit, sent_back=sent))
        return steps

    async def _approval(self, repo: Repository, cand: dict[str, Any], *,
                        actor: str) -> tuple[Approval | None, MergeStep | None]:
        """For a repository whose merges need approval: the approved request of this
        candidate, or the step that says why it does not merge now (its request waits;
        or it was denied or expired, which fails the merge with the reason)."""
        task_id, branch, head = cand["task_id"], cand["branch"], cand["head"]
        request = await self.approvals.merge_request(
            task_id=task_id, role=cand["assigned_role"],
            details={"repo": repo.name, "branch": branch, "base": repo.base_branch,
                     "head": head, "task": cand["task_description"][:200]},
            expires_in=self.settings.approval_timeout)
        step = MergeStep(task_id=task_id, branch=branch, head=head, status="awaiting_approval",
                         reason=f"approval request {request.id} (`echoctl approvals approve "
                                f"{request.id}`)")
        if request.state == "approved":
            return request, None
        if request.state == "pending":
            return None, step
        why = f"merge not approved (request {request.id}, {request.state}" + (
            f" by {request.decided_by}" if request.decided_by not in (None, "system") else "") + (
            f": {request.reason})" if request.reason else ")")
        await self.store.start_merge(task_id, repo.name, branch, head, actor=actor)
        await self.store.finish_merge(task_id, "failed", why, None, actor=actor)
        return None, step.model_copy(update={"status": "failed", "reason": why})

    async def merge_all(self, *, actor: str = "merge-queue") -> list[MergeStep]:
        """One pass of the merge queue over every repository (the worker's automatic
        pass, `echoctl worker --merge-every`)."""
        steps: list[MergeStep] = []
        for row in await self.store.all():
            steps += await self.merge(row["name"], actor=actor)
        return steps

    async def gc(self, *, retention: timedelta = DEFAULT_RETENTION,
                 now: datetime | None = None) -> GcReport:
        """Remove worktrees whose task is gone, or finished longer than `retention` ago;
        and what is left of repositories that were removed."""
        now = now or datetime.now(UTC)
        root = self.state_dir / "workspaces"
        names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        known = {r["name"] for r in await self.store.all()}
        removed: list[dict[str, Any]] = []
        kept = 0
        for name in names:
            ids = await anyio.to_thread.run_sync(task_ids, self.state_dir, name)
            states = await self.store.task_states(ids) if ids else {}
            for task_id in ids:
                state = states.get(task_id)
                why = None
                if name not in known:
                    why = "repository removed"
                elif state is None:
                    why = "task gone"
                elif state["status"] in ("completed", "failed", "cancelled", "dead") and \
                        (state["completed_at"] is None or state["completed_at"] + retention <= now):
                    why = f"task {state['status']} over {retention} ago"
                if why is None:
                    kept += 1
                    continue
                await anyio.to_thread.run_sync(remove_workspace, self.state_dir, name, task_id)
                removed.append({"repo": name, "task_id": task_id, "reason": why})
        return GcReport(removed=removed, kept=kept)

    async def diff(self, task_id: int) -> str | None:
        """The diff of a task's branch against the commit it started from; None when it
        changed nothing."""
        row = await self.store.task_workspace(task_id)
        if row is None:
            raise NotFound(f"no task {task_id}")
        ws, repo = row["workspace"], row["repo"]
        if not isinstance(repo, dict):
            raise UsageError(f"task {task_id} has no repository (`tasks submit --repo NAME`)")
        if not isinstance(ws, dict):
            meta = read_meta(Layout.of(self.state_dir, repo["name"]), task_id)
            raise UsageError(f"task {task_id} has no result commit yet" +
                             (" (its worktree is here: " + meta["path"] + ")" if meta else ""))
        if not ws.get("changed"):
            return None
        return await anyio.to_thread.run_sync(diff, self.state_dir, repo["name"],
                                              ws["base_commit"], ws["head"])


async def merge_every(service: RepoService, seconds: float, *, actor: str) -> None:
    """The worker's automatic merge pass, every `seconds`, until cancelled. A pass that
    fails (the database is down, git failed) is logged and tried again next time."""
    while True:
        await anyio.sleep(seconds)
        try:
            for step in await service.merge_all(actor=actor):
                log.info("merge queue: task %s %s %s%s", step.task_id, step.branch, step.status,
                         f" ({step.reason})" if step.reason else "")
        except EchoError as exc:
            log.warning("merge queue pass failed: %s", exc)


def workspace_lines(ws: dict[str, Any]) -> list[str]:
    """A task result's `workspace`, as `tasks show` prints it."""
    lines = [f"workspace: {ws.get('repo')} branch {ws.get('branch')} from "
             f"{ws.get('base_branch')} at {str(ws.get('base_commit'))[:12]}"]
    if not ws.get("changed"):
        return [*lines, "no changes"]
    files = ws.get("files") or []
    lines.append(f"head {str(ws.get('head'))[:12]}, {len(files)} file(s) changed "
                 "(`echoctl tasks diff ID` prints the diff)")
    return [*lines, *str(ws.get("diffstat") or "").splitlines()]
