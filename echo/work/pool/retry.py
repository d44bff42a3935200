"""The retry decision: what an executor's error means for its task, as a `Failure`.

Pure (no database, no clock of its own), so every rule is a unit test: a `TaskError`
says whether it may run again and when (`retryable`, `retry_at`, its Claude `run`);
any other error is a crash the task may survive, unless it is a `UsageError`. The
queue's `fail` statement then applies the decision (pending after `delay`, dead once
the counted retries are used up, failed when not retryable).
"""

from __future__ import annotations

import logging
from datetime import datetime

from echo.errors import ClaudeDeferred, EchoError, TaskError, UsageError
from echo.runtime import Backoff
from echo.work.tasks import Failure, Task

log = logging.getLogger(__name__)


def failure_of(task: Task, exc: Exception, *, backoff: Backoff, now: datetime) -> Failure:
    """The failure to store for `task`, whose executor raised `exc` at `now`.

    - an approval the run waits for (`ClaudeDeferred`): the task waits, holding no slot
      and using up no retry;
    - a moment it may run again (a plan's reset, or the account's pause its run met):
      retried then, not counted: waiting out a limit is not the task's fault;
    - otherwise retried after `backoff.delay(retry_count)` if retryable, counted."""
    if isinstance(exc, ClaudeDeferred):
        return Failure(task, str(exc), True, counted=False, run=exc.run, awaiting=True)
    if isinstance(exc, TaskError):
        retryable, retry_at, run = exc.retryable, exc.retry_at, exc.run
    else:
        retryable, retry_at, run = not isinstance(exc, UsageError), None, None
    if isinstance(exc, EchoError):
        message = str(exc)
    else:
        log.exception("executor %s crashed on task %s", task.task_type, task.task_id)
        message = f"executor crashed: {type(exc).__name__}: {exc}"
    message = message.replace("\x00", "\\0")  # Postgres stores no NUL in text
    if run is not None and run.pause_until is not None:
        retry_at = run.pause_until  # the account's pause: no run before it anyway
    if retry_at is not None:
        delay = (retry_at - now).total_seconds()
        return Failure(task, message, True, delay=delay, counted=False, run=run)
    return Failure(task, message, retryable, delay=backoff.delay(task.retry_count), run=run)
