"""`echoctl tasks ...` and `echoctl worker`: the work queue from the command line.

Input is checked before the database is touched (a usage error exits 2 and leaves
nothing behind). As with the bus, the schema is not migrated on the fly: an
unmigrated namespace stops with "run `echoctl db migrate`".

`echoctl worker` is a standalone worker: several of them, on one machine or many,
share one database. It runs until SIGTERM or SIGINT, then drains: running tasks
get `--grace` seconds to finish and the rest go back to the queue. A second
signal stops at once (what is held is still released).
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import typer
from anyio.abc import TaskStatus
from rich.markup import escape
from rich.table import Table

from echo.bus.envelope import check_role
from echo.commands._common import JsonOpt, console, emit_json, run, settings
from echo.config import Settings
from echo.db import Database, schema_guard
from echo.errors import ClaudeNotInstalled, ConfigError, EchoError, MigrationError, UsageError
from echo.listener import Listener
from echo.work import (
    STATUSES,
    TASK_TYPES,
    ClaudeExecutor,
    ClaudeRunOptions,
    CommandExecutor,
    Executor,
    ExecutorPool,
    NewTask,
    NoopExecutor,
    Task,
    TaskQueue,
)

tasks_app = typer.Typer(help="The work queue: submit, list, show, cancel, retry.",
                        no_args_is_help=True)


async def _with_queue(s: Settings, fn: Any) -> Any:
    database = await Database.open(s, max_size=1)
    try:
        with schema_guard(s.namespace):
            return await fn(TaskQueue(database))
    finally:
        await database.close()


def _payload(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--payload is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError("--payload must be a JSON object")
    return data


@tasks_app.command()
def submit(
    ctx: typer.Context,
    description: str = typer.Argument(..., help="What to do (the prompt, or the command)."),
    role: str | None = typer.Option(None, "--role", help="Only workers of this role run it."),
    priority: int = typer.Option(0, "--priority", help="Higher runs first."),
    timeout: int = typer.Option(300, "--timeout", help="Wall-clock seconds per attempt."),
    max_retries: int = typer.Option(3, "--max-retries", help="Retries after the first try."),
    task_type: str = typer.Option("claude", "--type", help="claude, command or noop."),
    dedupe_key: str | None = typer.Option(None, "--dedupe-key",
                                          help="At most one live task per key."),
    payload: str | None = typer.Option(None, "--payload", help="JSON object for the executor."),
    json_out: bool = JsonOpt,
) -> None:
    """Add a task to the queue."""
    s = settings(ctx)
    if role is not None:
        check_role(role, s.agents_dir)
    task = NewTask(description, task_type=task_type, priority=priority, role=role,
                   timeout_seconds=timeout, max_retries=max_retries, dedupe_key=dedupe_key,
                   payload=_payload(payload))
    task.check()
    made = run(lambda: _with_queue(s, lambda q: q.enqueue_many([task])))[0]
    if json_out:
        emit_json({"task_id": made.task_id, "created": made.created})
    elif made.created:
        console.print(f"task {made.task_id} queued")
    else:
        console.print(f"task {made.task_id} already holds dedupe key {dedupe_key!r}; not added")


@tasks_app.command("list")
def list_tasks(
    ctx: typer.Context,
    status: str | None = typer.Option(None, "--status", help=", ".join(STATUSES)),
    role: str | None = typer.Option(None, "--role"),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000),
    json_out: bool = JsonOpt,
) -> None:
    """The latest tasks, newest first."""
    s = settings(ctx)
    if status is not None and status not in STATUSES:
        raise UsageError(f"unknown status {status!r}; use {', '.join(STATUSES)}")
    rows = run(lambda: _with_queue(s, lambda q: q.list(status=status, role=role, limit=limit)))
    if json_out:
        emit_json(rows)
        return
    if not rows:
        console.print("no tasks")
        return
    table = Table("id", "type", "status", "role", "prio", "tries", "description", "error")
    for r in rows:
        table.add_row(str(r["task_id"]), r["task_type"], r["status"], r["assigned_role"] or "",
                      str(r["task_priority"]), f"{r['retry_count']}/{r['max_retries']}",
                      r["task_description"][:50], (r["error"] or "")[:40])
    console.print(table)


@tasks_app.command()
def show(ctx: typer.Context, task_id: int = typer.Argument(...), json_out: bool = JsonOpt) -> None:
    """One task, with its audit trail."""
    s = settings(ctx)

    async def body(q: TaskQueue) -> dict[str, Any]:
        row = await q.get(task_id)
        row["history"] = await q.history(task_id)
        return row

    row = run(lambda: _with_queue(s, body))
    if json_out:
        emit_json(row)
        return
    table = Table(show_header=False, box=None)
    for key, value in row.items():
        if key != "history" and value is not None:
            table.add_row(key, json.dumps(value, default=str) if isinstance(value, dict | list)
                          else str(value))
    console.print(table)
    for h in row["history"]:
        console.print(f"{h['at']:%Y-%m-%d %H:%M:%S} {h['action']:<22} {h['actor']}")


@tasks_app.command()
def cancel(ctx: typer.Context, task_id: int = typer.Argument(...)) -> None:
    """Cancel a pending or running task (a running one is stopped by its worker)."""
    s = settings(ctx)
    previous = run(lambda: _with_queue(s, lambda q: q.cancel(task_id)))
    console.print(f"task {task_id} cancelled (was {previous})")


@tasks_app.command()
def retry(ctx: typer.Context, task_id: int = typer.Argument(...)) -> None:
    """Queue a failed, dead or cancelled task again, with its retries reset."""
    s = settings(ctx)
    run(lambda: _with_queue(s, lambda q: q.requeue(task_id)))
    console.print(f"task {task_id} queued again")


# --------------------------------------------------------------------------- worker
def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def _role_options(s: Settings) -> Any:
    """Claude options from agents/<role>/role.toml; defaults for role-less tasks."""
    from echo.org.roles import load_role

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
                    skip_permissions=role.claude.skip_permissions)
            cache[task.role] = found
        return cache[task.role]

    return options


def _executors(s: Settings, wanted: list[str], explicit: bool,
               config_dir: Path | None) -> dict[str, Executor]:
    out: dict[str, Executor] = {}
    for name in wanted:
        if name == "noop":
            out[name] = NoopExecutor()
        elif name == "command":
            out[name] = CommandExecutor()
        elif name == "claude":
            claude = ClaudeExecutor(s, options=_role_options(s), config_dir=config_dir,
                                    config_dir_per_slot=config_dir is not None)
            try:
                claude.binary()
            except ClaudeNotInstalled as exc:
                if explicit:
                    raise
                typer.echo(f"warning: not serving claude tasks: {exc}", err=True)
                continue
            out[name] = claude
        else:
            raise UsageError(f"unknown executor {name!r}; use {', '.join(TASK_TYPES)}")
    return out


def worker(
    ctx: typer.Context,
    concurrency: int = typer.Option(4, "--concurrency", min=1, max=1024, help="Slots."),
    roles: list[str] | None = typer.Option(None, "--roles", "--role",
                                           help="Only these roles' tasks (comma-separated)."),
    executor: list[str] | None = typer.Option(None, "--executor",
                                              help="claude, command, noop (default: all)."),
    lease: float = typer.Option(30.0, "--lease", min=0.5, help="Lease seconds."),
    grace: float = typer.Option(10.0, "--grace", min=0.0, help="Drain grace seconds."),
    claude_config_dir: Path | None = typer.Option(
        None, "--claude-config-dir", help="A CLAUDE_CONFIG_DIR per slot, under this folder."),
) -> None:
    """Run tasks until SIGTERM/SIGINT, then drain gracefully. Run as many as you like."""
    s = settings(ctx)
    role_list = _split(roles) or None
    for role in role_list or []:
        check_role(role, s.agents_dir)
    wanted = _split(executor) or list(TASK_TYPES)
    executors = _executors(s, wanted, bool(executor), claude_config_dir)
    if not executors:
        raise ConfigError("this worker has no executor it can run; see the warnings above")

    async def body() -> None:
        database = await Database.open(s, min_size=0, max_size=4)  # no floor to restore in an outage
        try:
            async with database.acquire() as conn:
                if not await conn.fetchval("SELECT to_regclass('agent_tasks') IS NOT NULL"):
                    raise MigrationError(f"schema {s.namespace!r} has no work queue; "
                                         "run `echoctl db migrate`")
            listener = Listener(s)
            pool = ExecutorPool(s, database, executors, concurrency=concurrency,
                                roles=role_list, listener=listener, lease_seconds=lease,
                                grace_seconds=grace)
            await _serve(pool, listener)
            m = pool.metrics()
            typer.echo(f"worker {pool.worker_prefix} stopped: {m.succeeded} completed, "
                       f"{m.failed} failed, {m.released} released", err=True)
        finally:
            await database.close()

    run(body)


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


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(tasks_app, name="tasks")
    app.command("worker")(worker)
    app.command("claude")(claude_status)


def claude_status(ctx: typer.Context, as_json: bool = JsonOpt) -> None:
    """Which Claude CLI runs the work and whether it has a login: the mode of a run."""
    from echo.work.claude import login_hint, resolve_claude_bin

    s = settings(ctx)
    try:
        binary: str | None = resolve_claude_bin(s)
        missing = None
    except EchoError as exc:
        binary, missing = None, str(exc)
    login = login_hint()
    live = bool(binary and login)
    info = {
        "binary": binary, "login": login, "mode": "claude" if live else "fallback",
        "reason": None if live else (missing or "no ANTHROPIC_API_KEY and no `claude /login` credentials"),
    }
    if as_json:
        emit_json(info)
    elif live:
        console.print(f"mode: [green]claude[/] ({binary}, {login}): deciders and work use the real CLI")
    else:
        console.print(
            f"mode: [yellow]fallback[/] ({escape(str(info['reason']))}): deciders use role keywords and "
            "templates, assigned work is recorded as skipped. To switch: install the CLI "
            "(`make setup`) and set ANTHROPIC_API_KEY or run `claude /login`."
        )
