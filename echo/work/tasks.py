"""What goes into the work queue and what comes out: a task's values, checked at the door.

`NewTask` is a task to enqueue, checked before it reaches the database (one clear line
naming the field); `Enqueued` says what became of it. `Task` is a claimed task as its
worker sees it: (worker_id, attempt) is its lease token. `Completion` and `Failure`
are what a worker reports back. The queue (`echo.work.queue.TaskQueue`) stores them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from echo.db import Record, nul_free
from echo.errors import UsageError
from echo.work.governor.ledger import RunRecord

#: The executors a task may name.
TASK_TYPES = ("claude", "command", "noop")

#: A ceiling for any organisation; the client and the queue enforce `settings.max_task_bytes`.
HARD_MAX_TASK_BYTES = 16 * 1024 * 1024
MAX_DEDUPE_KEY_CHARS = 200
_NUL = "contains a NUL character, which Postgres cannot store"


@dataclass(frozen=True)
class NewTask:
    """A task to enqueue. `role` None means any role-less worker may run it."""

    description: str
    task_type: str = "claude"
    priority: int = 0
    role: str | None = None
    timeout_seconds: int = 300
    max_retries: int = 3
    dedupe_key: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    delay: float = 0.0

    def check(self, max_bytes: int | None = None) -> str:
        """Reject bad input before it reaches the database, in one clear line naming the
        field: Postgres would refuse a NUL or a NaN with a SQLSTATE, and take a
        description of any size. `max_bytes` is `settings.max_task_bytes`, the limit of
        the description and of the encoded payload each (as `max_body_bytes` is a
        message's); `HARD_MAX_TASK_BYTES` without it. Returns the encoded payload."""
        limit = min(max_bytes or HARD_MAX_TASK_BYTES, HARD_MAX_TASK_BYTES)
        if not self.description.strip():
            raise UsageError("a task needs a description")
        if not nul_free(self.description):
            raise UsageError(f"the task description {_NUL}")
        size = len(self.description.encode(errors="surrogatepass"))
        if size > limit:
            raise UsageError(f"the task description is {size} bytes, more than "
                             f"max_task_bytes={limit}; put the detail in a file and name it")
        if self.task_type not in TASK_TYPES:
            raise UsageError(f"unknown task type {self.task_type!r}; use {', '.join(TASK_TYPES)}")
        if not -1000 <= self.priority <= 1000:
            raise UsageError("priority must be between -1000 and 1000 (higher runs first)")
        if not 1 <= self.timeout_seconds <= 7 * 24 * 3600:
            raise UsageError("timeout must be between 1 second and 7 days")
        if not 0 <= self.max_retries <= 100:
            raise UsageError("max retries must be between 0 and 100")
        if not (0 <= self.delay <= 366 * 24 * 3600):  # also refuses NaN
            raise UsageError("delay must be between 0 and 366 days")
        if self.dedupe_key is not None and not (
                self.dedupe_key.strip() and len(self.dedupe_key) <= MAX_DEDUPE_KEY_CHARS
                and nul_free(self.dedupe_key)):
            raise UsageError(f"a dedupe key is 1-{MAX_DEDUPE_KEY_CHARS} characters without NUL; "
                             "leave it out for none")
        return self.encoded_payload(limit)

    def encoded_payload(self, max_bytes: int = 0) -> str:
        """The payload as JSON text, or `UsageError` naming what is wrong with it."""
        if not isinstance(self.payload, Mapping):
            raise UsageError("the task payload must be a JSON object")
        if not nul_free(dict(self.payload)):
            raise UsageError(f"the task payload {_NUL}")
        try:
            encoded = json.dumps(dict(self.payload), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"the task payload is not JSON that Postgres stores ({exc}; "
                             "NaN and Infinity are not JSON)") from None
        except RecursionError:
            raise UsageError("the task payload is nested too deeply") from None
        size = len(encoded.encode(errors="surrogatepass"))
        limit = max_bytes or HARD_MAX_TASK_BYTES
        if size > limit:
            raise UsageError(f"the task payload is {size} bytes, more than max_task_bytes={limit}")
        return encoded


@dataclass(frozen=True)
class Enqueued:
    task_id: int
    created: bool  # False: the dedupe key belonged to a live task, whose id this is


@dataclass(frozen=True)
class Task:
    """A claimed task, as its worker sees it. (worker_id, attempt) is the lease token."""

    task_id: int
    task_type: str
    description: str
    priority: int
    role: str | None
    worker_id: str
    attempt: int
    timeout_seconds: int
    max_retries: int
    retry_count: int
    payload: dict[str, Any]
    started_at: datetime
    #: What is left of the smallest budget that applies to this run (the governor's
    #: claim says; None: no budget applies, or not a governed task type).
    budget_left_usd: float | None = None

    @classmethod
    def from_row(cls, row: Record) -> Task:
        return cls(row["task_id"], row["task_type"], row["task_description"],
                   row["task_priority"], row["assigned_role"], row["assigned_worker_id"],
                   row["attempt"], row["timeout_seconds"], row["max_retries"],
                   row["retry_count"], row["payload"] or {}, row["started_at"],
                   row.get("budget_left_usd"))


@dataclass(frozen=True)
class Completion:
    task: Task
    result: Any
    cost_usd: float | None = None
    session_id: str | None = None
    run: RunRecord | None = None  # the Claude run's ledger row, written with the result


@dataclass(frozen=True)
class Failure:
    """`retryable` failures run again after `delay` seconds; `counted` ones use up a retry."""

    task: Task
    error: str
    retryable: bool
    delay: float = 0.0
    counted: bool = True
    cost_usd: float | None = None
    session_id: str | None = None
    run: RunRecord | None = None  # the Claude run's ledger row, written with the failure
    #: The run stopped at a tool call awaiting approval: the task waits, holding nothing.
    awaiting: bool = False
