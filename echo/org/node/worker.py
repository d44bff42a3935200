"""`echoctl worker`: a standalone pool of executors serving the organisation's queue.

Several workers, on one machine or many, share one database. A worker runs until
SIGTERM or SIGINT, then drains: running tasks get `grace` seconds to finish and
the rest go back to the queue. A second signal stops at once (what is held is
still released). Claude tasks run with their role's options (agents/<role>/role.toml),
which is why this lives in `echo.org` and not in `echo.work`.
"""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
from anyio.abc import TaskStatus

from echo.config import Settings
from echo.db import Database
from echo.errors import ClaudeNotInstalled, MigrationError, UsageError
from echo.listener import Listener
from echo.org import repos
from echo.org.governance import synced_governor
from echo.org.roles import check_role, load_role
from echo.work import (
    TASK_TYPES,
    ClaudeExecutor,
    ClaudeRunOptions,
    CommandExecutor,
    Executor,
    ExecutorPool,
    NoopExecutor,
    Task,
    TaskQueue,
)
from echo.work.pool import PoolMetrics
from echo.work.workspaces import WorkspaceExecutor


def role_options(s: Settings) -> Callable[[Task], ClaudeRunOptions]:
    """Claude options from agents/<role>/role.toml; defaults for role-less tasks."""
    cache: dict[str | None, ClaudeRunOptions] = {}

    def options(task: Task) -> ClaudeRunOptions:
        if task.role not in cache:
            found = ClaudeRunOptions()
            if task.role and (s.agents_dir / task.role / "role.toml").is_file():
                role = load_role(s.agents_dir, task.role)
                found = ClaudeRunOptions(
                    model=role.claude.model, system_prompt=role.system_prompt,
                    allowed_tools=tuple(role.claude.allowed_tools),
                    max_turns=role.claude.max_turns, max_budget_usd=role.claude.max_budget_usd,
                    skip_permissions=role.claude.skip_permissions, account=role.claude.account,
                    idle_timeout=role.claude.idle_timeout,
                    workspace_tools=tuple(role.workspace.tools),
                    approval_tools=tuple(role.approval.tools))
            cache[task.role] = found
        return cache[task.role]

    return options


def executors(s: Settings, wanted: Sequence[str], *, explicit: bool, config_dir: Path | None,
              warn: Callable[[str], None]) -> dict[str, Executor]:
    """The executors a worker serves. Claude without a CLI is an error when asked for
    explicitly, else a warning (`warn`) and the worker serves the others."""
    out: dict[str, Executor] = {}
    for name in wanted:
        if name == "noop":
            out[name] = NoopExecutor()
        elif name == "command":
            out[name] = CommandExecutor()
        elif name == "claude":
            claude = ClaudeExecutor(s.claude, s.database, options=role_options(s), config_dir=config_dir,
                                    config_dir_per_slot=config_dir is not None)
            try:
                claude.binary()
            except ClaudeNotInstalled as exc:
                if explicit:
                    raise
                warn(f"not serving claude tasks: {exc}")
                continue
            out[name] = claude
        else:
            raise UsageError(f"unknown executor {name!r}; use {', '.join(TASK_TYPES)}")
    return out


async def run_worker(s: Settings, served: dict[str, Executor], *, concurrency: int,
                     roles: list[str] | None, lease: float, grace: float,
                     merge_every: float = 0.0) -> tuple[str, PoolMetrics]:
    """Serve the queue until a signal; returns the worker's name and its counters. With
    `merge_every`, it also runs the merge queue's pass that often (echo.org.repos)."""
    for role in roles or []:
        check_role(role, s.agents_dir)
    database = await Database.open(s.database, min_size=0, max_size=4)  # no floor to restore in an outage
    try:
        if not await TaskQueue(database).installed():
            raise MigrationError(f"schema {s.namespace!r} has no work queue; run `echoctl db migrate`")
        listener = Listener(s.database)
        governor = await synced_governor(s, database)  # the configured budgets, as agents do
        served = {name: WorkspaceExecutor(e, s.state_dir) for name, e in served.items()}
        pool = ExecutorPool(s.work, database, served, concurrency=concurrency, roles=roles,
                            listener=listener, lease_seconds=lease, grace_seconds=grace,
                            gate=governor.gate)
        async with anyio.create_task_group() as tg:
            if merge_every > 0:
                tg.start_soon(functools.partial(repos.merge_every, repos.RepoService(s, database),
                                                merge_every, actor=f"{pool.worker_prefix}:merge"))
            await _serve(pool, listener)
            tg.cancel_scope.cancel()
        return pool.worker_prefix, pool.metrics()
    finally:
        await database.close()


async def _serve(pool: ExecutorPool, listener: Listener) -> None:
    finished = anyio.Event()

    async def run_pool(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            await pool.run(task_status=task_status)
        finally:
            finished.set()

    async with anyio.create_task_group() as tg:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            await tg.start(listener.run)
            await tg.start(run_pool)
            types = ",".join(sorted(pool.executors))
            print(f"worker {pool.worker_prefix} ready: {pool.concurrency} slots, "
                  f"executors {types}, roles {pool.roles or 'any'}", file=sys.stderr, flush=True)

            async def on_signals() -> None:
                stopping = False
                async for _ in signals:
                    if stopping:  # a second signal: stop now (held work is still released)
                        tg.cancel_scope.cancel()
                        return
                    stopping = True
                    pool.stop()

            tg.start_soon(on_signals)
            await finished.wait()
            tg.cancel_scope.cancel()
