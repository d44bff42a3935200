"""The client's tasks: submit, list, show, follow, cancel, retry, count.

Tasks live in the queue (`echo.work.TaskQueue`); a task that waits is annotated
with why the governor holds it (echo.org.governance), and a task's detail carries
its run events, its runs from the spend ledger and its approval requests.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from echo.errors import UsageError
from echo.org.charts import FinishedChart, check_minutes, finished_chart
from echo.org.client_base import ClientBase
from echo.org.governance import annotate_waiting, governor_for
from echo.org.inputs import check_id
from echo.org.roles import check_role
from echo.org.views import (
    DoingNow,
    RunEventRow,
    Submitted,
    TaskDetail,
    TaskEvent,
    TaskRun,
    TaskSummary,
)
from echo.work import NewTask, check_outcome, task_outcome
from echo.work.approvals import ApprovalStore
from echo.work.runs import PgRunStore
from echo.work.workspaces import RESERVED_KEYS


class TaskOps(ClientBase):
    """The task queue as people use it."""

    async def submit_task(self, description: str, *, role: str | None = None, priority: int = 0,
                          timeout_seconds: int = 300, max_retries: int = 3,
                          task_type: str = "claude",
                          dedupe_key: str | None = None,
                          payload: dict[str, Any] | None = None,
                          repo: str | None = None) -> Submitted:
        """Queue a task (for a role's workers when `role` is given; in its own worktree
        of repository `repo` when given: the repository goes in its payload)."""
        if role is not None:
            check_role(role, self.settings.agents_dir)
        task = NewTask(description, task_type=task_type, priority=priority, role=role,
                       timeout_seconds=timeout_seconds, max_retries=max_retries,
                       dedupe_key=dedupe_key,
                       payload=payload or {})
        task.check(self.settings.max_task_bytes)
        reserved = sorted(set(task.payload) & set(RESERVED_KEYS))
        if reserved:
            raise UsageError(f"payload key {reserved[0]!r} is set by ECHO; name a repository "
                             "with --repo")
        if repo is not None:
            async with self.repos() as repos:
                task = replace(task, payload={**task.payload, "repo": await repos.payload(repo)})
        async with self._queue() as q:
            made = (await q.enqueue_many([task]))[0]
        return Submitted(task_id=made.task_id, created=made.created)

    async def tasks(self, *, status: str | None = None, role: str | None = None,
                    limit: int = 50) -> list[TaskSummary]:
        """The latest tasks, newest first, optionally of one outcome (`skipped` too:
        `TaskSummary.outcome`) or role."""
        check_outcome(status)
        if role is not None:
            check_role(role, self.settings.agents_dir)
        async with self._queue() as q:
            rows = await annotate_waiting(self.settings, q.db,
                                          await q.list(status=status, role=role, limit=limit))
        return [TaskSummary.model_validate(r) for r in rows]

    async def task(self, task_id: int) -> TaskDetail:
        """One task (every column) and its audit trail; `NotFound` if there is none."""
        check_id(task_id)
        async with self._queue() as q:
            row = await q.get(task_id)
            row["outcome"] = task_outcome(row["status"], row.get("error"))
            await annotate_waiting(self.settings, q.db, [row])
            history = await q.history(task_id)
            events = await PgRunStore(q.db).events(task_id, limit=10_000)
            runs = await governor_for(self.settings, q.db).runs_of_task(task_id)
            approvals = await ApprovalStore(q.db).of_task(task_id)
        return TaskDetail(task=row, history=[TaskEvent.model_validate(h) for h in history],
                          events=[RunEventRow.model_validate(e) for e in events],
                          runs=[TaskRun.model_validate(r) for r in runs], approvals=approvals)

    async def doing_now(self) -> list[DoingNow]:
        """Each running Claude task's latest event: what each agent is doing now."""
        async with self._queue() as q:
            rows = await PgRunStore(q.db).doing_now()
        return [DoingNow.model_validate(r) for r in rows]

    async def task_events(self, task_id: int, *, after: tuple[int, int] = (0, 0)
                          ) -> tuple[str, list[RunEventRow]]:
        """The task's status and its run events after (attempt, seq): what `--follow`
        polls."""
        async with self._queue() as q:
            row = await q.get(task_id)
            events = await PgRunStore(q.db).events(task_id, after=after)
        return row["status"], [RunEventRow.model_validate(e) for e in events]

    async def cancel_task(self, task_id: int) -> str:
        """Cancel a pending or running task; returns the status it had."""
        check_id(task_id)
        async with self._queue() as q:
            return await q.cancel(task_id, actor="operator")

    async def retry_task(self, task_id: int, *, anywhere: bool = False) -> None:
        """Queue a failed, dead or cancelled task again, with its retries reset. With
        `anywhere`, any worker may take it, not only the one with its worktree (a
        repository without a push): it starts over from the base; a pending task
        waiting for that worker is let go too."""
        check_id(task_id)
        async with self._queue() as q:
            await q.requeue(task_id, actor="operator", anywhere=anywhere)

    async def task_counts(self) -> dict[str, int]:
        """How many tasks have each outcome (`TaskSummary.outcome`: skipped apart from
        failed), every one of `echo.work.OUTCOMES`, zeros included."""
        async with self._queue() as q:
            return await q.counts()

    async def finished_chart(self, *, minutes: int = 60) -> FinishedChart:
        """Tasks finished per minute by outcome over the last `minutes` (the database's
        clock): the console's throughput chart."""
        check_minutes(minutes)
        async with self._queue() as q:
            rows = await q.finished_by_minute(minutes)
        return finished_chart(rows, minutes)
