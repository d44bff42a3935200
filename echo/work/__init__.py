"""Work queue and execution: `agent_tasks`, the executor pool and the executors.

    queue = TaskQueue(database)
    await queue.enqueue("review the design", role="cto", task_type="claude")

    claude = ClaudeExecutor(settings.claude, settings.database)  # each takes its slice
    pool = ExecutorPool(settings.work, database, {"claude": claude},
                        concurrency=2, roles=["cto"], listener=listener,
                        gate=ClaimGate.from_settings(settings.governor))  # budgets, pauses
    await tg.start(pool.run)      # claims, runs, heartbeats, rescues
    pool.stop()                   # graceful drain: finish or release, never lose

Guarantees: a task is completed at most once (writes are guarded by its lease) and
executed at least once (a dead worker's lease expires and the task is rescued).
"""

from echo.work.claude import ClaudeExecutor, ClaudeRunOptions
from echo.work.claude_cli import resolve_claude_bin
from echo.work.executors import CommandExecutor, Executor, NoopExecutor, Result
from echo.work.pool import ExecutorPool, PoolMetrics
from echo.work.process import ProcessResult, run_process
from echo.work.queue import (
    AWAITING_APPROVAL,
    FINAL_STATUSES,
    OUTCOMES,
    SKIPPED,
    STATUSES,
    TaskQueue,
    check_outcome,
    task_outcome,
)
from echo.work.tasks import TASK_TYPES, Completion, Enqueued, Failure, NewTask, Task

__all__ = [
    "AWAITING_APPROVAL",
    "FINAL_STATUSES",
    "OUTCOMES",
    "SKIPPED",
    "STATUSES",
    "TASK_TYPES",
    "ClaudeExecutor",
    "ClaudeRunOptions",
    "CommandExecutor",
    "Completion",
    "Enqueued",
    "Executor",
    "ExecutorPool",
    "Failure",
    "NewTask",
    "NoopExecutor",
    "PoolMetrics",
    "ProcessResult",
    "Result",
    "Task",
    "TaskQueue",
    "check_outcome",
    "resolve_claude_bin",
    "run_process",
    "task_outcome",
]
