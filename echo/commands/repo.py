"""`echoctl repo ...`: the repositories tasks work in, their merge queue and hygiene.

    echoctl repo add app ~/src/app --base main --test-command "pytest -q"
    echoctl tasks submit "Fix the flaky test" --role cto --repo app
    echoctl repo merge app        # land finished branches, one at a time, tests green
    echoctl repo gc               # remove worktrees of long-finished or vanished tasks

A bad repository (not git, no such base branch, a detached HEAD, a dirty base
checkout, a bad name) is refused in one line, exit 2, with nothing written.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import typer
from rich.markup import escape

from echo.commands._common import JsonOpt, console, emit_json, plain_table, settings, with_client
from echo.config import Settings
from echo.org.client import Client
from echo.org.repos import RepoService

T = TypeVar("T")

repo_app = typer.Typer(help="Repositories tasks work in: add, list, show, remove, merge, gc.",
                       no_args_is_help=True)


def with_repos(s: Settings, fn: Callable[[RepoService], Awaitable[T]]) -> T:
    async def body(client: Client) -> T:
        async with client.repos() as repos:
            return await fn(repos)

    return with_client(s, body)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


@repo_app.command()
def add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A short name: lower-case letters, digits, . _ -"),
    source: str = typer.Argument(..., help="The repository's path or URL (never written to)."),
    base: str | None = typer.Option(None, "--base", help="Branch work starts from and lands "
                                    "on (default: the checkout's current branch)."),
    test_command: str | None = typer.Option(None, "--test-command",
                                            help="Must pass before a branch lands."),
    push: bool = typer.Option(False, "--push", help="Push merged results to the repository "
                              "(default: they stay in ECHO's mirror)."),
    require_approval: bool = typer.Option(
        False, "--require-approval", help="A merge into the base waits for an operator's "
        "approval (`echoctl approvals`)."),
    json_out: bool = JsonOpt,
) -> None:
    """Add a repository tasks may work in (`tasks submit --repo NAME`)."""
    s = settings(ctx)
    repo = with_repos(s, lambda r: r.add(name, source, base=base, test_command=test_command,
                                          push=push, require_approval=require_approval))
    if json_out:
        emit_json(repo.as_payload())
        return
    console.print(f"repository {repo.name} added: {escape(repo.source)} (base {repo.base_branch}"
                  + (f", tests: {escape(repo.test_command)}" if repo.test_command else "")
                  + (", merges need approval" if repo.require_approval else "") + ")")


@repo_app.command("list")
def list_repos(ctx: typer.Context, json_out: bool = JsonOpt) -> None:
    """Every repository of the organisation."""
    rows = with_repos(settings(ctx), lambda r: r.all())
    if json_out:
        emit_json(rows)
        return
    if not rows:
        console.print("no repositories (add one with `echoctl repo add NAME PATH`)")
        return
    table = plain_table("name", "base", "source", "test command")
    for row in rows:
        table.add_row(row.name, row.base_branch, escape(row.source), escape(row.test_command or ""))
    console.print(table)


@repo_app.command()
def show(ctx: typer.Context, name: str = typer.Argument(...), json_out: bool = JsonOpt) -> None:
    """One repository: its mirror here, disk use, worktrees and recent merges."""
    info = with_repos(settings(ctx), lambda r: r.show(name))
    if json_out:
        emit_json(info)
        return
    console.print(f"{info.name}: {escape(info.source)}, base {info.base_branch}"
                  + (", pushes merges" if info.push else "")
                  + (", merges need approval" if info.require_approval else ""))
    console.print(f"test command: {escape(info.test_command or 'none')}")
    if info.mirror:
        console.print(f"mirror: {info.mirror} ({info.base_branch} at {(info.base_commit or '?')[:12]})")
        console.print(f"fetch merged work: {info.fetch_hint}")
    else:
        console.print("mirror: none on this machine yet (made by the first task)")
    console.print(f"disk: {_size(info.disk_bytes)}, worktrees: {len(info.worktrees)}"
                  + (f" (tasks {', '.join(map(str, info.worktrees))})" if info.worktrees else ""))
    for m in info.merges:
        console.print(f"merge task {m['task_id']} {m['branch']} {m['status']}"
                      + (f" -> {m['merged_commit'][:12]}" if m.get("merged_commit") else "")
                      + (f": {escape(m['reason'])}" if m.get("reason") else ""))


@repo_app.command()
def remove(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Forget a repository; this machine's mirror and worktrees of it are removed."""
    with_repos(settings(ctx), lambda r: r.remove(name))
    console.print(f"repository {name} removed")


@repo_app.command()
def merge(ctx: typer.Context, name: str = typer.Argument(...),
          test_timeout: float = typer.Option(600.0, "--test-timeout", min=1.0,
                                             help="Seconds the test command may take."),
          json_out: bool = JsonOpt) -> None:
    """Merge finished task branches into the base, one at a time: rebase, test, fast-forward."""
    steps = with_repos(settings(ctx), lambda r: r.merge(name, test_timeout=test_timeout))
    if json_out:
        emit_json(steps)
        return
    if not steps:
        console.print(f"nothing to merge in {name}")
    for step in steps:
        console.print(f"task {step.task_id} {step.branch}: {step.status}"
                      + (f" -> {step.merged_commit[:12]}" if step.merged_commit else "")
                      + (f" ({escape(step.reason)})" if step.reason else ""))
    if any(step.status == "failed" for step in steps):
        raise typer.Exit(1)


@repo_app.command()
def gc(ctx: typer.Context,
       retention_hours: float = typer.Option(7 * 24.0, "--retention-hours", min=0.0,
                                             help="Keep finished tasks' worktrees this long."),
       json_out: bool = JsonOpt) -> None:
    """Remove worktrees whose task finished past the retention period, or is gone."""
    report = with_repos(settings(ctx), lambda r: r.gc(retention=timedelta(hours=retention_hours)))
    if json_out:
        emit_json(report)
        return
    for item in report.removed:
        console.print(f"removed {item['repo']} task {item['task_id']} ({item['reason']})")
    console.print(f"{len(report.removed)} worktree(s) removed, {report.kept} kept")


def register(app: typer.Typer) -> None:
    app.add_typer(repo_app, name="repo")
