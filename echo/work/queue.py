"""The work queue: `agent_tasks` rows and every way they change state.

Postgres is the queue. `claim` takes pending rows with `FOR UPDATE SKIP LOCKED`
inside a transaction that commits before the rows are returned, so a claim is
either visible to every other worker or never happened: a claim can never be
stranded in a pooled connection's open transaction (the failure that once stalled
the original system for 7.5 hours).

Ownership is a lease. A claimed row carries the worker id (host:pid:slot), an
`attempt` number and `lease_expires_at`; the worker extends the lease with
`heartbeat`. A worker that dies stops heartbeating and `rescue` (run by every
worker) puts its task back, or marks it dead after `max_retries`. Every write a
worker makes is guarded by (task_id, worker id, attempt), so a worker that lost
its lease cannot complete a task that someone else now owns: completion is exactly
once, execution at least once.

The SQL lives in shared/sql/queries/tasks.sql; the audit rows and NOTIFY wake-ups
are written by the triggers of shared/sql/003_tasks.sql. What goes in and comes out
(`NewTask`, `Task`, `Completion`, `Failure`) is `echo.work.tasks`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from echo.db import Database, load_queries
from echo.errors import NotFound, StoreRejected, UsageError
from echo.runtime import Backoff
from echo.work.governor.gate import ClaimGate
from echo.work.governor.ledger import ledger_rows
from echo.work.tasks import TASK_TYPES, Completion, Enqueued, Failure, NewTask, Task

#: SQLSTATE unique_violation: requeueing a task whose dedupe key a live task now holds.
UNIQUE_VIOLATION = "23505"

#: Every status a task can have; completed, failed, cancelled and dead are final.
#: `awaiting_approval`: its run stopped at a tool call an operator must decide
#: (echo.work.approvals); it holds no worker until the decision queues it again.
AWAITING_APPROVAL = "awaiting_approval"
STATUSES = ("pending", "running", "completed", "failed", "cancelled", "dead", AWAITING_APPROVAL)
FINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "dead"})
#: The prefix of a task's error when it could not run because Claude was unavailable
#: (the workflow's agents write it, echo.org.workflow.agent).
SKIPPED = "skipped: claude unavailable"
#: What a person reads of a task (its outcome): the status, except that a failure
#: because Claude was unavailable reads `skipped`. `tasks list` and its filter, the
#: dashboard, the summary API and the metrics all use these words.
OUTCOMES = ("pending", "running", "completed", "failed", "skipped", "cancelled", "dead",
            AWAITING_APPROVAL)


def task_outcome(status: str, error: str | None) -> str:
    """The outcome of a task of `status` with `error` (one of `OUTCOMES`)."""
    return "skipped" if status == "failed" and (error or "").startswith(SKIPPED) else status


def check_outcome(value: str | None) -> str | None:
    """`value` if it is an outcome (or None); a `UsageError` naming them otherwise."""
    if value is not None and value not in OUTCOMES:
        raise UsageError(f"unknown status {value!r}; use {', '.join(OUTCOMES)}")
    return value


_Q = load_queries("tasks")


#: How long a failed task waits before its next attempt: the n-th retry waits between
#: d/2 and d, d = min(300, 2**n) seconds. The jitter spreads out retries of tasks that
#: failed together (a rate limit hits every worker at once). The rescue statement
#: computes the same delay in SQL from these four numbers (see `rescue`).
DEFAULT_BACKOFF = Backoff(initial=1.0, factor=2.0, max=300.0, jitter=0.5)


def _tokens(tasks: Sequence[Task]) -> tuple[list[int], list[str], list[int]]:
    return [t.task_id for t in tasks], [t.worker_id for t in tasks], [t.attempt for t in tasks]


#: One encoder for every result: `json.dumps(default=...)` builds a new one per call.
_encode_result = json.JSONEncoder(default=str).encode


def _completion_columns(done: Sequence[Completion]) -> tuple[list[Any], ...]:
    ids, workers, attempts = _tokens([d.task for d in done])
    return (ids, workers, attempts, [_encode_result(d.result) for d in done],
            [d.cost_usd for d in done], [d.session_id for d in done])


#: No governor: nothing is held back (tools and tests that build a bare queue).
UNGOVERNED = ClaimGate(governed=())


class TaskQueue:
    """The job operations on `agent_tasks`, each in its own committed transaction.

    A worker's operations are single statements, run in autocommit: the statement is
    its own transaction (its audit rows included, written by the triggers), and asyncpg
    returns its rows only once the server reports the commit. An explicit BEGIN and
    COMMIT around them would only add two round trips.
    """

    def __init__(self, database: Database, *, max_task_bytes: int | None = None) -> None:
        """`max_task_bytes` is `settings.work.max_task_bytes`, the limit `enqueue` holds
        a task to; None (a consumer, a bench) holds it to `HARD_MAX_TASK_BYTES` only."""
        self.db = database
        self.max_task_bytes = max_task_bytes

    # ------------------------------------------------------------------ producers
    async def enqueue(self, description: str, **options: Any) -> Enqueued:
        """One task; see `NewTask` for the options."""
        return (await self.enqueue_many([NewTask(description, **options)]))[0]

    async def enqueue_many(self, tasks: Sequence[NewTask]) -> list[Enqueued]:
        """Many tasks in one statement (one transaction, one audit INSERT, one NOTIFY).
        A task whose dedupe key a live task holds is not added; its entry names that task."""
        limit = self.max_task_bytes
        payloads = [task.check(limit) for task in tasks]
        if not tasks:
            return []
        columns = (
            [t.task_type for t in tasks], [t.description for t in tasks],
            [t.priority for t in tasks], [t.role for t in tasks],
            [t.timeout_seconds for t in tasks], [t.max_retries for t in tasks],
            [t.dedupe_key for t in tasks], payloads,
            [float(t.delay) for t in tasks],
        )
        keys = [t.dedupe_key for t in tasks if t.dedupe_key is not None]
        async with self.db.transaction() as conn:
            inserted = await conn.fetch(_Q["enqueue"], *columns)
            live = {}
            if len(inserted) < len(tasks) and keys:
                live = {r["dedupe_key"]: r["task_id"]
                        for r in await conn.fetch(_Q["live_by_dedupe_key"], keys)}
        out: list[Enqueued] = []
        rows = iter(inserted)
        pending = next(rows, None)
        seen: set[str] = set()
        for task in tasks:
            key = task.dedupe_key
            if pending is not None and pending["dedupe_key"] == key and (
                key is None or key not in seen
            ):
                out.append(Enqueued(pending["task_id"], True))
                pending = next(rows, None)
            else:
                out.append(Enqueued(live.get(key, 0) if key else 0, False))
            if key is not None:
                seen.add(key)
        return out

    # ------------------------------------------------------------------- workers
    async def claim(
        self,
        worker_ids: Sequence[str],
        *,
        task_types: Sequence[str] = TASK_TYPES,
        roles: Sequence[str] | None = None,
        lease_seconds: float = 30.0,
        gate: ClaimGate = UNGOVERNED,
        place: str | None = None,
    ) -> list[Task]:
        """At most one task per id in `worker_ids` (the free slots), highest priority
        first, then oldest. Committed before it returns. The same statement as
        `complete_and_claim`, storing no result."""
        _, tasks = await self.complete_and_claim([], worker_ids, task_types=task_types,
                                                 roles=roles, lease_seconds=lease_seconds,
                                                 gate=gate, place=place)
        return tasks

    async def complete_and_claim(
        self,
        done: Sequence[Completion],
        worker_ids: Sequence[str],
        *,
        task_types: Sequence[str] = TASK_TYPES,
        roles: Sequence[str] | None = None,
        lease_seconds: float = 30.0,
        gate: ClaimGate = UNGOVERNED,
        place: str | None = None,
    ) -> tuple[set[int], list[Task]]:
        """`complete(done)` and `claim(worker_ids)` in one statement (one round trip,
        one commit): the ids that were still owned, and the tasks claimed. A slot may be
        named both by a finished task and in `worker_ids`: the guard of the completion
        names the old task and attempt, the claim a new task.

        The ledger rows of the finished runs are written in the same statement, and
        `gate` (the governor) decides which governed tasks may start, counting them.
        `place` is where this worker keeps worktrees (`workspace_place`): a task whose
        worktree is at another place is not claimed, and one of a repository without
        a push is pinned here when claimed (029). None claims only unpinned tasks."""
        if not done and not worker_ids:
            return set(), []
        runs = ledger_rows([d.run for d in done if d.run is not None])
        async with self.db.acquire() as conn:
            rows = await conn.fetch(
                _Q["complete_and_claim"], *_completion_columns(done), list(worker_ids),
                list(task_types), None if roles is None else list(roles), lease_seconds,
                runs, *gate.params(), place)
        applied = {r["task_id"] for r in rows if r["completed"]}
        return applied, [Task.from_row(r) for r in rows if not r["completed"]]

    async def heartbeat(self, tasks: Sequence[Task], lease_seconds: float) -> set[int]:
        """Extend the leases; return the ids still owned (the others must stop)."""
        if not tasks:
            return set()
        async with self.db.acquire() as conn:
            rows = await conn.fetch(_Q["heartbeat"], *_tokens(tasks), lease_seconds)
        return {r["task_id"] for r in rows}

    async def complete(self, done: Sequence[Completion], *,
                       gate: ClaimGate = UNGOVERNED) -> set[int]:
        """Store results; return the ids that were still owned (the others are ignored).
        The same statement as `complete_and_claim`, claiming for no slot."""
        applied, _ = await self.complete_and_claim(done, [], gate=gate)
        return applied

    async def fail(self, failures: Sequence[Failure], *,
                   gate: ClaimGate = UNGOVERNED) -> dict[int, str]:
        """Record failures; return the new status of each task that was still owned.
        The runs' ledger rows (and the account pause of a usage limit) are written in
        the same statement, whether or not the task was still owned."""
        if not failures:
            return {}
        now, timezone, *_ = gate.params()
        async with self.db.acquire() as conn:
            rows = await conn.fetch(
                _Q["fail"], *_tokens([f.task for f in failures]),
                [f.error[:4000] for f in failures], [f.retryable for f in failures],
                [f.counted for f in failures], [max(0.0, f.delay) for f in failures],
                [f.cost_usd for f in failures], [f.session_id for f in failures],
                ledger_rows([f.run for f in failures if f.run is not None]), now, timezone,
                [f.awaiting for f in failures],
            )
        return {r["task_id"]: r["status"] for r in rows}

    async def release(self, tasks: Sequence[Task]) -> set[int]:
        """Give tasks back untouched (a drain ran out of time); return those released."""
        if not tasks:
            return set()
        async with self.db.acquire() as conn:
            rows = await conn.fetch(_Q["release"], *_tokens(tasks))
        return {r["task_id"] for r in rows}

    async def next_due(self, task_types: Sequence[str],
                       roles: Sequence[str] | None = None,
                       place: str | None = None) -> float | None:
        """Seconds until the earliest pending task of `task_types` (and `roles`) that a
        worker at `place` may claim is due: <= 0 when one is due now, None when none is
        pending."""
        async with self.db.acquire() as conn:
            due = await conn.fetchval(_Q["next_due"], list(task_types),
                                      None if roles is None else list(roles), place)
        return None if due is None else float(due)

    async def rescue(self, *, actor: str, backoff: Backoff = DEFAULT_BACKOFF,
                     limit: int = 1000) -> dict[int, str]:
        """Put back (or kill) tasks whose lease expired; return their new statuses. Each
        waits `backoff.delay(retry_count)`, drawn in SQL per row from the backoff's four
        numbers (the statement mirrors `Backoff.delay`; the formula is not repeated here)."""
        async with self.db.acquire() as conn:
            rows = await conn.fetch(_Q["rescue"], backoff.initial, backoff.factor, backoff.max,
                                    backoff.jitter, limit, actor)
        return {r["task_id"]: r["status"] for r in rows}

    # ----------------------------------------------------------------- operators
    async def cancel(self, task_id: int, *, actor: str = "cli") -> str:
        """Cancel a pending, running or awaiting task; return the status it had. A running task's
        worker is told by NOTIFY (and notices at its next heartbeat anyway)."""
        async with self.db.transaction() as conn:
            await conn.fetchval(_Q["set_actor"], actor)
            previous = await conn.fetchval(_Q["cancel"], task_id)
            status = None if previous else await conn.fetchval(_Q["status_of"], task_id)
        if previous:
            return str(previous)
        if status is None:
            raise NotFound(f"no task {task_id}; `echoctl tasks list` shows the tasks")
        raise UsageError(f"task {task_id} is already {status}; only pending, running or "
                         "awaiting_approval tasks can be cancelled")

    async def requeue(self, task_id: int, *, actor: str = "cli", anywhere: bool = False) -> None:
        """Run a failed, dead or cancelled task again, with its retries reset; with
        `anywhere`, by any worker, not only the one with its worktree (029), and a
        pending task waiting for that worker is let go too."""
        try:
            async with self.db.transaction() as conn:
                await conn.fetchval(_Q["set_actor"], actor)
                done = await conn.fetchval(_Q["requeue"], task_id, anywhere)
                status = None if done else await conn.fetchval(_Q["status_of"], task_id)
        except StoreRejected as exc:
            if exc.sqlstate != UNIQUE_VIOLATION:
                raise
            raise UsageError(f"task {task_id} cannot run again: another live task holds "
                             "its dedupe key") from None
        if done:
            return
        if status is None:
            raise NotFound(f"no task {task_id}; `echoctl tasks list` shows the tasks")
        raise UsageError(f"task {task_id} is {status}; only failed, dead or cancelled tasks "
                         "(with --anywhere, pending ones too) can be retried")

    async def get(self, task_id: int) -> dict[str, Any]:
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(_Q["get"], task_id)
        if row is None:
            raise NotFound(f"no task {task_id}; `echoctl tasks list` shows the tasks")
        return dict(row)

    async def history(self, task_id: int) -> list[dict[str, Any]]:
        """The task's audit trail, oldest first."""
        async with self.db.acquire() as conn:
            return [dict(r) for r in await conn.fetch(_Q["history"], str(task_id))]

    async def spend(self) -> list[dict[str, Any]]:
        """The recorded cost of task runs, per role."""
        async with self.db.acquire() as conn:
            return [dict(r) for r in await conn.fetch(_Q["spend"])]

    async def finished_by_minute(self, minutes: int) -> list[dict[str, Any]]:
        """Tasks that ended in the last `minutes` (the database's clock): `ago` (whole
        minutes before now), `outcome` and `n`, one row per minute and outcome seen."""
        async with self.db.acquire() as conn:
            return [dict(r) for r in await conn.fetch(_Q["finished_by_minute"], minutes, SKIPPED)]

    async def list(self, *, status: str | None = None, role: str | None = None,
                   limit: int = 100) -> list[dict[str, Any]]:
        """The latest tasks, newest first; `status` is an outcome (`skipped` too): a
        skipped task is listed as skipped, not failed."""
        check_outcome(status)
        stored = "failed" if status == "skipped" else status
        skipped = {"skipped": True, "failed": False}.get(status or "")
        async with self.db.acquire() as conn:
            return [dict(r) for r in await conn.fetch(_Q["list"], stored, role, limit, skipped, SKIPPED)]

    async def installed(self) -> bool:
        """Whether the namespace has been migrated far enough to hold a queue."""
        async with self.db.acquire() as conn:
            return bool(await conn.fetchval(_Q["installed"]))

    async def counts(self) -> dict[str, int]:
        """How many tasks have each outcome (every one of `OUTCOMES`, zeros included)."""
        async with self.db.acquire() as conn:
            rows = await conn.fetch(_Q["counts"], SKIPPED)
        return dict.fromkeys(OUTCOMES, 0) | {r["outcome"]: r["n"] for r in rows}
