"""In-memory adapters of the pool's ports, for unit tests of the pool without Postgres.

`MemoryTasks` keeps `agent_tasks` rows in a dict and applies the rules of the queue's
statements (shared/sql/queries/tasks.sql) to them: the claim takes pending, due tasks
of the pool's types, roles and place, highest priority first, then oldest; every
write is guarded by the lease token (worker id, attempt); `fail` sends a task back
(after its delay), to `dead` once its counted retries are used up, or to `failed`;
`rescue` puts back what an expired lease held. It holds nothing back for the
governor (the gate's budgets and pauses live in SQL; their tests run on Postgres) and
writes no ledger.

Faults a test injects: `down` (every call raises `StoreUnavailable`, as a database
that does not answer), `refuse` (a completion of one of these task ids raises
`StoreRejected`, as Postgres refuses a result it cannot store). Time is `clock`
(seconds, monotonic), so a test moves leases and delays by moving its clock; a test
awaits what it expects with `until` (woken by every call), never with a sleep.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel

from echo.errors import StoreRejected, StoreUnavailable
from echo.runtime import Backoff
from echo.work.governor.gate import ClaimGate
from echo.work.pool.ports import PoolStores
from echo.work.queue import AWAITING_APPROVAL
from echo.work.tasks import Completion, Failure, Task


class Changes:
    """What a test awaits instead of sleeping: `until(condition)` returns once the
    condition holds, checked again after every `touch()` (a change the holder made)."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def touch(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._event.wait()


@dataclass
class TaskRow:
    """One task as the table holds it (the columns the pool's statements read or write)."""

    task_id: int
    description: str
    task_type: str = "noop"
    role: str | None = None
    priority: int = 0
    max_retries: int = 3
    timeout_seconds: int = 60
    payload: dict[str, Any] = field(default_factory=dict)
    status: str = "pending"
    run_after: float = 0.0
    worker: str | None = None
    attempt: int = 0
    retry_count: int = 0
    lease_until: float | None = None
    workspace_at: str | None = None
    result: Any = None
    error: str | None = None
    #: Every status it passed through, in order (what a test asserts on).
    history: list[str] = field(default_factory=lambda: ["pending"])

    def set(self, status: str) -> None:
        self.status = status
        self.history.append(status)


class MemoryTasks:
    """The pool's `PoolTasks` port over a dict of `TaskRow`s."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.rows: dict[int, TaskRow] = {}
        self.down = False
        self.refuse: set[int] = set()
        self.calls: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self.changes = Changes()

    # ------------------------------------------------------------ a test's hands
    def add(self, description: str = "a task", *, delay: float = 0.0, **columns: Any) -> int:
        """A pending task (due after `delay` seconds of `clock`); its id."""
        task_id = next(self._ids)
        self.rows[task_id] = TaskRow(task_id, description, run_after=self.clock() + delay,
                                     **columns)
        return task_id

    def cancel(self, task_id: int) -> None:
        """What `echoctl tasks cancel` does: the worker's next renewal says it is not ours."""
        row = self.rows[task_id]
        if row.status in ("pending", "running", AWAITING_APPROVAL):
            row.set("cancelled")
            row.lease_until = None
            self.changes.touch()

    def status(self, task_id: int) -> str:
        return self.rows[task_id].status

    async def until(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds, checking it after every call to the store."""
        await self.changes.until(condition)

    # ------------------------------------------------------------------ the port
    def _call(self, name: str) -> None:
        self.calls[name] += 1
        if self.down:
            self.changes.touch()
            raise StoreUnavailable(f"{name}: the database does not answer (injected)")

    def _owned(self, task: Task) -> TaskRow | None:
        row = self.rows.get(task.task_id)
        if row is None or row.status != "running" or row.worker != task.worker_id \
                or row.attempt != task.attempt:
            return None
        return row

    async def complete_and_claim(
        self, done: Sequence[Completion], worker_ids: Sequence[str], *,
        task_types: Sequence[str], roles: Sequence[str] | None, lease_seconds: float,
        gate: ClaimGate, place: str | None,
    ) -> tuple[set[int], list[Task]]:
        self._call("complete_and_claim")
        await anyio.lowlevel.checkpoint()
        refused = [d.task.task_id for d in done if d.task.task_id in self.refuse]
        if refused:  # one statement: nothing of it happens
            self.changes.touch()
            raise StoreRejected(f"result of task {refused[0]} refused (injected)",
                                sqlstate="22P05")
        applied = set()
        for d in done:
            row = self._owned(d.task)
            if row is not None:
                row.set("completed")
                row.result, row.error, row.lease_until = d.result, None, None
                applied.add(row.task_id)
        now = self.clock()
        claimable = sorted(
            (r for r in self.rows.values()
             if r.status == "pending" and r.run_after <= now and r.task_type in task_types
             and (roles is None or r.role in roles)
             and (r.workspace_at is None or r.workspace_at == place)),
            key=lambda r: (-r.priority, r.task_id))
        claimed = []
        for row, worker in zip(claimable, worker_ids, strict=False):
            row.set("running")
            row.worker, row.attempt = worker, row.attempt + 1
            row.lease_until = now + lease_seconds
            claimed.append(Task(row.task_id, row.task_type, row.description, row.priority,
                                row.role, worker, row.attempt, row.timeout_seconds,
                                row.max_retries, row.retry_count, dict(row.payload),
                                datetime.now(UTC)))
        self.changes.touch()
        return applied, claimed

    async def complete(self, done: Sequence[Completion], *, gate: ClaimGate) -> set[int]:
        applied, _ = await self.complete_and_claim(done, [], task_types=(), roles=None,
                                                   lease_seconds=0.0, gate=gate, place=None)
        return applied

    async def fail(self, failures: Sequence[Failure], *, gate: ClaimGate) -> dict[int, str]:
        self._call("fail")
        await anyio.lowlevel.checkpoint()
        statuses = {}
        for f in failures:
            row = self._owned(f.task)
            if row is None:
                continue
            again = f.retryable and (not f.counted or row.retry_count < row.max_retries)
            if f.awaiting:
                row.set(AWAITING_APPROVAL)
            elif not f.retryable:
                row.set("failed")
            elif not again:
                row.set("dead")
            else:
                row.set("pending")
                row.retry_count += 1 if f.counted else 0
                row.run_after = self.clock() + max(0.0, f.delay)
                row.worker = None
            row.error, row.lease_until = f.error, None
            statuses[row.task_id] = row.status
        self.changes.touch()
        return statuses

    async def heartbeat(self, tasks: Sequence[Task], lease_seconds: float) -> set[int]:
        self._call("heartbeat")
        await anyio.lowlevel.checkpoint()
        owned = set()
        for task in tasks:
            row = self._owned(task)
            if row is not None:
                row.lease_until = self.clock() + lease_seconds
                owned.add(row.task_id)
        self.changes.touch()
        return owned

    async def release(self, tasks: Sequence[Task]) -> set[int]:
        self._call("release")
        await anyio.lowlevel.checkpoint()
        released = set()
        for task in tasks:
            row = self._owned(task)
            if row is not None:
                row.set("pending")
                row.worker, row.lease_until, row.run_after = None, None, self.clock()
                released.add(row.task_id)
        self.changes.touch()
        return released

    async def next_due(self, task_types: Sequence[str], roles: Sequence[str] | None = None,
                       place: str | None = None) -> float | None:
        self._call("next_due")
        due = [r.run_after for r in self.rows.values()
               if r.status == "pending" and r.task_type in task_types
               and (roles is None or r.role in roles)
               and (r.workspace_at is None or r.workspace_at == place)]
        return min(due) - self.clock() if due else None

    async def rescue(self, *, actor: str, backoff: Backoff) -> dict[int, str]:
        self._call("rescue")
        now = self.clock()
        statuses = {}
        for row in self.rows.values():
            if row.status != "running" or row.lease_until is None or row.lease_until >= now:
                continue
            row.error = f"lease expired: worker {row.worker} stopped heartbeating"
            if row.retry_count >= row.max_retries:
                row.set("dead")
            else:
                row.set("pending")
                row.run_after = now + backoff.delay(row.retry_count)
                row.retry_count += 1
                row.worker = None
            row.lease_until = None
            statuses[row.task_id] = row.status
        self.changes.touch()
        return statuses


class MemoryApprovals:
    """The `ApprovalSweep` port: `woken` is what the next sweep returns."""

    def __init__(self) -> None:
        self.woken: list[int] = []

    async def sweep(self, *, clock: datetime | None = None) -> list[int]:
        woken, self.woken = self.woken, []
        return woken


class MemoryPresence:
    """The `Presence` port: `serving` holds what each live pool said it serves."""

    def __init__(self) -> None:
        self.serving: dict[str, tuple[tuple[str, ...] | None, tuple[str, ...]]] = {}

    async def keep(self, worker: str, roles: Sequence[str] | None,
                   task_types: Sequence[str], *, place: str | None = None,
                   halted: Callable[[], bool] = lambda: False) -> None:
        self.serving[worker] = (None if roles is None else tuple(roles), tuple(task_types))
        try:
            await anyio.sleep_forever()
        finally:
            if not halted():
                del self.serving[worker]


def memory_stores(clock: Callable[[], float] = time.monotonic) -> PoolStores:
    """A pool's stores, all in memory."""
    return PoolStores(MemoryTasks(clock), MemoryApprovals(), MemoryPresence())
