"""What the pool needs of its stores, as ports: the calls it makes, nothing more.

The pool's claim loop, result writer, lease keeper and drain are its hard parts, and
each depends only on these Protocols, so they are unit-tested on the in-memory
adapters (`echo.work.pool.memory`) without Postgres; the Postgres adapters are the
stores themselves (`TaskQueue`, `ApprovalStore`, `WorkerRegistry`), which satisfy the
Protocols structurally (mypy checks it in `PoolStores.postgres`), and the integration
tests keep running the pool on them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from echo.db import Database
from echo.runtime import Backoff
from echo.work.approvals.store import ApprovalStore
from echo.work.governor.gate import ClaimGate
from echo.work.queue import TaskQueue
from echo.work.tasks import Completion, Failure, Task
from echo.work.workers import WorkerRegistry


class PoolTasks(Protocol):
    """The job operations (`agent_tasks`), each one atomic. Every write is guarded by the
    task's lease token (worker id, attempt): what a worker no longer owns is untouched
    and missing from the answer."""

    async def complete_and_claim(
        self, done: Sequence[Completion], worker_ids: Sequence[str], *,
        task_types: Sequence[str], roles: Sequence[str] | None, lease_seconds: float,
        gate: ClaimGate, place: str | None,
    ) -> tuple[set[int], list[Task]]:
        """Store `done` and claim at most one task per worker id: (ids stored, claimed)."""
        ...

    async def complete(self, done: Sequence[Completion], *, gate: ClaimGate) -> set[int]:
        """Store results: the ids that were still owned."""
        ...

    async def fail(self, failures: Sequence[Failure], *, gate: ClaimGate) -> dict[int, str]:
        """Store failures: the new status of each task that was still owned."""
        ...

    async def heartbeat(self, tasks: Sequence[Task], lease_seconds: float) -> set[int]:
        """Extend the leases: the ids still owned (the others must stop)."""
        ...

    async def release(self, tasks: Sequence[Task]) -> set[int]:
        """Give unfinished tasks back untouched: the ids released."""
        ...

    async def next_due(self, task_types: Sequence[str], roles: Sequence[str] | None = None,
                       place: str | None = None) -> float | None:
        """Seconds until the earliest claimable pending task is due (None: none pending)."""
        ...

    async def rescue(self, *, actor: str, backoff: Backoff) -> dict[int, str]:
        """Put back the tasks whose lease expired: their new statuses."""
        ...


class ApprovalSweep(Protocol):
    async def sweep(self, *, clock: datetime | None = None) -> list[int]:
        """Expire approval requests past their time: the tasks queued again."""
        ...


class Presence(Protocol):
    async def keep(self, worker: str, roles: Sequence[str] | None,
                   task_types: Sequence[str], *, place: str | None = None,
                   halted: Callable[[], bool] = lambda: False) -> None:
        """Say this pool serves these roles and types until cancelled (a hint for the
        line a task nobody claims shows)."""
        ...


@dataclass(frozen=True)
class PoolStores:
    """The pool's adapters. `database` is where executors record their runs (Claude's
    events and ledger), None for the in-memory adapters."""

    tasks: PoolTasks
    approvals: ApprovalSweep
    presence: Presence
    database: Database | None = None

    @classmethod
    def postgres(cls, database: Database) -> PoolStores:
        return cls(TaskQueue(database), ApprovalStore(database), WorkerRegistry(database),
                   database)
