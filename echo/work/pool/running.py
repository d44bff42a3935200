"""A claimed task while the pool holds it, the pool's figures, and its workers' names.

`Running` is the one record every room of the pool shares: the claim loop makes it,
the slot runner executes it, the lease keeper moves its deadline, the writer's batch
frees it. Its `valid_until` is the owner's rule (echo/org/leases.py has the role's):
a run may go on only while the monotonic clock is before the send time of the last
claim or renewal the database confirmed, plus the lease.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

from echo.degradation import Condition
from echo.work.tasks import Task

_pool_numbers = itertools.count(1)


def default_worker_prefix() -> str:
    """host:pid, with a suffix for the second and later pools of one process."""
    number = next(_pool_numbers)
    pid = f"{os.getpid()}" if number == 1 else f"{os.getpid()}-{number}"
    return f"{socket.gethostname()}:{pid}"


@dataclass(frozen=True)
class PoolMetrics:
    pool_size: int
    active: int
    available_slots: int
    total_processed: int
    succeeded: int
    failed: int
    released: int
    lost: int
    unwritten: int  # finished, result not yet stored (e.g. the database is down)
    avg_duration_ms: float
    success_rate: float
    degraded: bool
    last_error: str | None
    claim_rounds: int = 0  # claim queries made: an idle pool has made at least one
    db_errors: int = 0     # failed database calls (claims, writes) while degraded


@dataclass
class Tally:
    """What a pool has done so far, for its `metrics()`."""

    succeeded: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0
    durations_ms: float = 0.0
    claim_rounds: int = 0
    db_errors: int = 0

    def metrics(self, pool_size: int, held: Sequence[Running], free: int,
                condition: Condition) -> PoolMetrics:
        processed = self.succeeded + self.failed
        return PoolMetrics(
            pool_size=pool_size, active=len(held), available_slots=free,
            total_processed=processed, succeeded=self.succeeded, failed=self.failed,
            released=self.released, lost=self.lost,
            unwritten=sum(1 for r in held if r.writing),
            avg_duration_ms=self.durations_ms / processed if processed else 0.0,
            success_rate=self.succeeded / processed if processed else 1.0,
            degraded=condition.degraded, last_error=condition.last_error,
            claim_rounds=self.claim_rounds, db_errors=self.db_errors,
        )


@dataclass(eq=False)
class Running:
    task: Task
    slot: int
    started: float = field(default_factory=time.monotonic)
    writing: bool = False
    scope: anyio.CancelScope | None = None  # its runner's, while it executes
    cancelled: bool = False
    #: The owner's rule: the send time of its last confirmed claim or renewal, plus
    #: the lease (anyio's clock, which is the monotonic clock).
    valid_until: float = float("inf")

    def cancel(self) -> None:
        """Stop the work (a user cancelled it, its lease was lost, or a drain); a task
        that already finished is left to its write."""
        if self.writing:
            return
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()
