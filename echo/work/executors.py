"""Executors: what runs a claimed task. The pool picks one by the task's `task_type`.

An executor is any object with `async execute(task) -> Result`. It reports failure
by raising: an `EchoError` leaf with `retryable` (and `retry_at`) says whether the
task runs again; any other exception is treated as a crash and retried. Cancelling
`execute` (a cancelled task, a lost lease, a drain past its grace) must stop the
work; `run_process` does that for child processes.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from echo.errors import CommandFailed
from echo.work.governor.ledger import RunRecord
from echo.work.process import run_process, scrubbed_env
from echo.work.tasks import Task


@dataclass(frozen=True)
class Result:
    """A finished task: `output` (JSON-able) is stored in `agent_tasks.result`."""

    output: Any
    cost_usd: float | None = None
    session_id: str | None = None
    run: RunRecord | None = None  # a Claude run: its ledger row


class Executor(Protocol):
    async def execute(self, task: Task) -> Result: ...


class NoopExecutor:
    """Does nothing, as fast as possible: measures the queue itself. A payload
    `{"sleep": seconds}` makes it hold its slot that long (drain and lease tests)."""

    async def execute(self, task: Task) -> Result:
        pause = task.payload.get("sleep")
        if pause:
            await anyio.sleep(float(pause))
        return Result({"ok": True})


class CommandExecutor:
    """Runs a program without a shell: `payload["argv"]`, else the description split
    like a shell would (`shlex`), with optional `cwd`, `env` and `stdin` in the payload.

    The child gets a scrubbed environment (no database URL, no API keys) plus
    `ECHO_TASK_ID` and `ECHO_TASK_ATTEMPT`. A timeout or a kill by signal is retried;
    a non-zero exit is retried too, within the task's `max_retries`.
    """

    def __init__(self, *, kill_grace: float = 2.0, output_limit: int = 64 * 1024) -> None:
        self.kill_grace = kill_grace
        self.output_limit = output_limit

    async def execute(self, task: Task) -> Result:
        payload = task.payload
        argv = payload.get("argv") or shlex.split(task.description)
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise CommandFailed(f"task {task.task_id}: payload argv must be a list of strings")
        env = scrubbed_env({**{str(k): str(v) for k, v in (payload.get("env") or {}).items()},
                            "ECHO_TASK_ID": str(task.task_id),
                            "ECHO_TASK_ATTEMPT": str(task.attempt)})
        stdin = payload.get("stdin")
        try:
            done = await run_process(
                argv, stdin=stdin.encode() if isinstance(stdin, str) else None, env=env,
                cwd=payload.get("cwd"), time_limit=task.timeout_seconds, kill_grace=self.kill_grace,
            )
        except OSError as exc:
            raise CommandFailed(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
        stdout = done.stdout[-self.output_limit:].decode(errors="replace")
        stderr = done.stderr[-self.output_limit:].decode(errors="replace")
        if done.timed_out:
            raise CommandFailed(f"{argv[0]} timed out after {task.timeout_seconds}s; "
                                "its process group was killed", retryable=True)
        if done.signal is not None:
            raise CommandFailed(f"{argv[0]} was killed by signal {done.signal}", retryable=True)
        if done.returncode != 0:
            tail = stderr.strip().splitlines()[-1:] or [""]
            raise CommandFailed(f"{argv[0]} exited with status {done.returncode}: {tail[0][:300]}",
                                retryable=True)
        return Result({"returncode": 0, "stdout": stdout, "stderr": stderr,
                       "duration_sec": round(done.duration, 3)})
