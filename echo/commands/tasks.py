"""`echoctl tasks ...`, `echoctl worker` and `echoctl claude`: the work queue.

Input is checked before the database is touched (a usage error exits 2 and leaves
nothing behind). As with the bus, the schema is not migrated on the fly: an
unmigrated namespace stops with "run `echoctl db migrate`".

`echoctl worker` is a standalone worker (echo/org/node/worker.py): several of them, on
one machine or many, share one database. It runs until SIGTERM or SIGINT, then
drains: running tasks get `--grace` seconds to finish and the rest go back to the
queue. A second signal stops at once (what is held is still released).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import typer
from rich.markup import escape
from rich.table import Table

from echo.commands._common import (
    JsonOpt,
    clip,
    console,
    emit_json,
    plain_table,
    role_column,
    run,
    settings,
    with_client,
)
from echo.commands.budget import governor_lines
from echo.errors import ConfigError, UsageError
from echo.org.client import Client
from echo.org.inputs import check_seconds
from echo.org.node.worker import executors as worker_executors
from echo.org.node.worker import run_worker
from echo.org.repos import workspace_lines
from echo.org.status import claude_mode
from echo.org.views import RunEventRow
from echo.work import AWAITING_APPROVAL, FINAL_STATUSES, OUTCOMES, TASK_TYPES

tasks_app = typer.Typer(help="The work queue: submit, list, show, cancel, retry.",
                        no_args_is_help=True)


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
    repo: str | None = typer.Option(None, "--repo", help="Work in its own worktree of this "
                                    "repository (`echoctl repo add`)."),
    json_out: bool = JsonOpt,
) -> None:
    """Add a task to the queue."""
    s = settings(ctx)
    data = _payload(payload)
    made = with_client(s, lambda c: c.submit_task(
        description, role=role, priority=priority, timeout_seconds=timeout, max_retries=max_retries,
        task_type=task_type, dedupe_key=dedupe_key, payload=data, repo=repo))
    if json_out:
        emit_json(made)
    elif made.created:
        console.print(f"task {made.task_id} queued")
    else:
        console.print(f"task {made.task_id} already holds dedupe key {dedupe_key!r}; not added")


@tasks_app.command("list")
def list_tasks(
    ctx: typer.Context,
    status: str | None = typer.Option(None, "--status", help=", ".join(OUTCOMES)),
    role: str | None = typer.Option(None, "--role"),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000),
    json_out: bool = JsonOpt,
) -> None:
    """The latest tasks, newest first. `tries` is runs started / runs allowed."""
    s = settings(ctx)
    rows = with_client(s, lambda c: c.tasks(status=status, role=role, limit=limit))
    if json_out:
        emit_json(rows)
        return
    if not rows:
        console.print("no tasks")
        return
    table = plain_table("id", "type", "status")
    role_column(table, "role", (r.assigned_role for r in rows))
    for name in ("prio", "tries", "description", "error"):
        table.add_column(name)
    for r in rows:
        table.add_row(str(r.task_id), r.task_type, r.outcome, r.assigned_role or "",
                      str(r.task_priority), f"{r.attempt}/{r.max_retries + 1}",
                      escape(clip(r.task_description, 60)), escape(clip(r.waiting or r.error or "", 60)))
    console.print(table)


def _event_line(e: RunEventRow) -> str:
    cost = f" ${e.cost_usd:.4f}" if e.cost_usd is not None else ""
    turn = f" turn {e.turn}" if e.turn is not None else ""
    return f"{e.at:%H:%M:%S} #{e.attempt}.{e.seq:<4} {e.kind:<11}{turn}{cost}  {e.summary}"


async def _follow(client: Client, task_id: int, interval: float = 0.5) -> None:
    """Print the task's run events as they are written, until the task is final."""
    after = (0, 0)
    while True:
        status, events = await client.task_events(task_id, after=after)
        for e in events:
            console.print(escape(_event_line(e)), highlight=False, soft_wrap=True)
            after = (e.attempt, e.seq)
        if status in FINAL_STATUSES and not events:
            console.print(f"task {task_id} {status}")
            return
        if status == AWAITING_APPROVAL and not events:
            console.print(f"task {task_id} {status}: `echoctl approvals list --task {task_id}`")
            return
        if not events:
            await anyio.sleep(interval)


@tasks_app.command()
def show(ctx: typer.Context, task_id: int = typer.Argument(...), json_out: bool = JsonOpt,
         follow: bool = typer.Option(False, "--follow", "-f",
                                     help="Stream its run events until the task is final.")
         ) -> None:
    """One task, with its audit trail and what its Claude runs did."""
    s = settings(ctx)
    if follow and json_out:
        raise UsageError("--follow streams lines; use it without --json")
    if follow:
        with_client(s, lambda c: _follow(c, task_id))
        return
    detail = with_client(s, lambda c: c.task(task_id))
    if json_out:
        emit_json({**detail.task, "history": [h.model_dump() for h in detail.history],
                   "events": [e.model_dump(mode="json") for e in detail.events],
                   "runs": [r.model_dump(mode="json") for r in detail.runs],
                   "approvals": [a.model_dump(mode="json") for a in detail.approvals]})
        return
    table = Table(show_header=False, box=None)
    for key, value in detail.task.items():
        if value is not None:
            table.add_row(key, escape(json.dumps(value, default=str)
                                      if isinstance(value, dict | list) else str(value)))
    console.print(table)
    workspace = (detail.task.get("result") or {}).get("workspace") \
        if isinstance(detail.task.get("result"), dict) else None
    if isinstance(workspace, dict):
        for line in workspace_lines(workspace):
            console.print(escape(line))
    for h in detail.history:
        console.print(f"{h.at:%Y-%m-%d %H:%M:%S} {h.action:<22} {escape(h.actor)}")
    for e in detail.events:
        console.print(escape(_event_line(e)), highlight=False, soft_wrap=True)
    for r in detail.runs:
        resumed = f", resumed attempt {r.resumed_attempt}" if r.resumed_attempt else ""
        console.print(escape(f"run of attempt {r.attempt}: {r.outcome}, ${r.cost_usd:.4f}, "
                             f"{r.turns if r.turns is not None else '-'} turn(s){resumed}"),
                      highlight=False)
    for a in detail.approvals:
        by = f" by {a.decided_by}" if a.decided_by else ""
        console.print(escape(f"approval request {a.id} {a.state}{by}: {a.summary()}"),
                      highlight=False, soft_wrap=True)


@tasks_app.command()
def diff(ctx: typer.Context, task_id: int = typer.Argument(...)) -> None:
    """The diff of a task's branch against the commit it started from (from the mirror)."""
    s = settings(ctx)
    text = with_client(s, lambda c: _diff(c, task_id))
    if text is None:
        typer.echo(f"task {task_id}: no changes")
    else:
        typer.echo(text, nl=False)


async def _diff(client: Any, task_id: int) -> str | None:
    async with client.repos() as repos:
        result: str | None = await repos.diff(task_id)
        return result


@tasks_app.command()
def cancel(ctx: typer.Context, task_id: int = typer.Argument(...)) -> None:
    """Cancel a pending or running task (a running one is stopped by its worker)."""
    s = settings(ctx)
    previous = with_client(s, lambda c: c.cancel_task(task_id))
    console.print(f"task {task_id} cancelled (was {previous})")


@tasks_app.command()
def retry(ctx: typer.Context, task_id: int = typer.Argument(...),
          anywhere: bool = typer.Option(
              False, "--anywhere", help="Let any worker take it, not only the one whose "
              "machine has its worktree (a repository without --push): it starts over "
              "from the base. Also lets go of a pending task waiting for that machine.")
          ) -> None:
    """Queue a failed, dead or cancelled task again, with its retries reset."""
    s = settings(ctx)
    with_client(s, lambda c: c.retry_task(task_id, anywhere=anywhere))
    console.print(f"task {task_id} queued again" + (" for any worker" if anywhere else ""))


# --------------------------------------------------------------------------- worker
def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def worker(
    ctx: typer.Context,
    concurrency: int = typer.Option(4, "--concurrency", min=1, max=1024, help="Slots."),
    roles: list[str] | None = typer.Option(None, "--roles", "--role", metavar="ROLES",
                                           help="Only these roles' tasks (comma-separated)."),
    executor: list[str] | None = typer.Option(None, "--executor", metavar="NAMES",
                                              help="claude, command, noop (default: all)."),
    lease: float = typer.Option(30.0, "--lease", min=0.5, help="Lease seconds."),
    grace: float = typer.Option(10.0, "--grace", min=0.0, help="Drain grace seconds."),
    claude_config_dir: Path | None = typer.Option(
        None, "--claude-config-dir", help="A CLAUDE_CONFIG_DIR per slot, under this folder."),
    merge_every: float = typer.Option(0.0, "--merge-every", min=0.0, help="Run the merge "
                                      "queue of every repository this often (seconds; 0: never)."),
) -> None:
    """Run tasks until SIGTERM/SIGINT, then drain gracefully. Run as many as you like."""
    check_seconds(lease, "--lease", least=0.5, most=3600)
    check_seconds(grace, "--grace")
    s = settings(ctx)
    role_list = _split(roles) or None
    wanted = _split(executor) or list(TASK_TYPES)
    served = worker_executors(s, wanted, explicit=bool(executor), config_dir=claude_config_dir,
                              warn=lambda line: typer.echo(f"warning: {line}", err=True))
    if not served:
        raise ConfigError("this worker has no executor it can run; see the warnings above")
    name, m = run(lambda: run_worker(s, served, concurrency=concurrency, roles=role_list,
                                     lease=lease, grace=grace, merge_every=merge_every))
    typer.echo(f"worker {name} stopped: {m.succeeded} completed, {m.failed} failed, "
               f"{m.released} released", err=True)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(tasks_app, name="tasks")
    app.command("worker")(worker)
    app.command("claude")(claude_status)


def claude_status(ctx: typer.Context, as_json: bool = JsonOpt) -> None:
    """Which Claude CLI runs the work and whether it has a login: the mode of a run."""
    s = settings(ctx)
    info = claude_mode(s)
    governor = with_client(s, lambda c: c.governor_summary())
    if as_json:
        emit_json({**info.model_dump(mode="json", exclude={"missing"}),
                   "account": s.claude_account, "billing": s.claude_billing,
                   "governor": governor})
        return
    if info.mode == "claude":
        console.print(f"mode: [green]claude[/] ({info.binary}, {info.login}): deciders and work "
                      "use the real CLI")
    else:
        todo = ("install the CLI (`make setup`) and set ANTHROPIC_API_KEY or run `claude /login`"
                if info.missing == "cli" else
                f"the CLI is installed ({info.binary}); set ANTHROPIC_API_KEY or run `claude /login`")
        console.print(
            f"mode: [yellow]fallback[/] ({escape(str(info.reason))}): deciders use role keywords and "
            f"templates, assigned work is recorded as skipped. To switch: {todo}.")
    console.print(f"account: {escape(s.claude_account)}, billing: {s.claude_billing}"
                  + (" (costs are list-price estimates)" if s.claude_billing == "subscription" else ""))
    for line in governor_lines(governor):
        console.print(line)
