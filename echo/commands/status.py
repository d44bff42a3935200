"""`echoctl status`: each agent of the organisation, and what holds its Claude runs.

The figures come from the client (`Client.status`: the state directory and, for
other machines, Postgres); this module only renders them, and exits 1 when the
status lists a problem."""

from __future__ import annotations

import typer
from rich.markup import escape

from echo.commands._common import JsonOpt, console, emit_json, plain_table, role_column, settings, with_client
from echo.commands.budget import governor_lines
from echo.org.node.state import read_org
from echo.org.status import AgentProcessStatus


def register(app: typer.Typer) -> None:
    app.command("status")(status)


def status(ctx: typer.Context, json_out: bool = JsonOpt) -> None:
    """Each agent: pid, state, uptime, restarts, last heartbeat, inbox lag, running tasks."""
    s = settings(ctx)
    info = with_client(s, lambda c: c.status())
    if json_out:
        emit_json(info)
        raise typer.Exit(1 if info.problems else 0)
    org = info.organisation
    console.print(
        f"organisation: [bold]{org.state}[/] (pid {org.pid or '-'}), database {escape(org.database)}",
        soft_wrap=True,
    )
    for problem in info.problems:
        console.print(f"[red]{escape(problem)}[/]", soft_wrap=True)
    if org.node_restarts and org.state != "restarting":
        console.print(f"node restarts: {org.node_restarts} (last: {escape(org.last_node_restart or '-')})",
                      soft_wrap=True)
    record = read_org(s)
    if org.pid and record and record.console:
        where = record.console_url or f"not answering ({record.console.state}; `echoctl logs console`)"
        console.print(f"console: {where}, restarts {record.console.restarts}", soft_wrap=True)
    table = plain_table()
    role_column(table, "role", (a.role for a in info.agents))
    for name in ("pid", "state", "uptime", "restarts", "heartbeat", "inbox", "tasks"):
        table.add_column(name, no_wrap=True)
    colours = {"healthy": "green", "degraded": "yellow", "unresponsive": "red", "down": "red",
               "crashed": "red", "stale": "red"}
    for a in info.agents:
        colour = colours.get(a.state, "white")
        table.add_row(
            a.role,
            str(a.pid or "-"),
            f"[{colour}]{a.state}[/]",
            a.uptime,
            str(a.restarts),
            f"{a.heartbeat_age:.1f}s ago" if a.heartbeat_age is not None else "-",
            str(a.inbox_lag if a.inbox_lag is not None else "-"),
            str(a.running_tasks if a.running_tasks is not None else "-"),
        )
    console.print(table)
    for a in info.agents:  # below the table: a reason does not fit a column of 80
        if a.reason and a.state in ("degraded", "unresponsive", "crashed", "standby", "stale"):
            console.print(f"[yellow]{a.role}[/] {a.state}: {escape(a.reason)}", soft_wrap=True)
    for line in governor_lines(info.governor):
        console.print(line, soft_wrap=True)  # a command to run stays on one line
    if info.processes:
        _print_processes(info.processes, colours)
    if info.problems:
        raise typer.Exit(1)


def _print_processes(processes: list[AgentProcessStatus], colours: dict[str, str]) -> None:
    """Every agent process of the organisation, on every node (from the database)."""
    console.print("agent processes on every node (✓ active):")
    table = plain_table()
    role_column(table, "role", (p.role for p in processes))
    for name in ("node", "pid", "state", "active", "epoch", "heartbeat", "renewed"):
        table.add_column(name, no_wrap=True)
    for p in processes:
        colour = colours.get(p.state, "white")
        table.add_row(p.role, escape(p.node), str(p.pid), f"[{colour}]{p.state}[/]",
                      "✓" if p.active else "", str(p.epoch or "-"), f"{p.heartbeat_age:.1f}s ago",
                      f"{p.renewed_age:.1f}s ago" if p.renewed_age is not None else "-")
    console.print(table)
