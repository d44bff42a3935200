"""`echoctl restart | agent`: one agent of the organisation.

`restart` asks the running organisation (through the client) to restart one agent;
`agent ROLE` prints what it is up to (`Client.overview`), and `agent ROLE
--autonomous` runs it in this process until stopped (echo.org.__main__)."""

from __future__ import annotations

import typer
from rich.markup import escape

from echo.commands._common import JsonOpt, console, emit_json, settings, with_client
from echo.config import Settings
from echo.org.roles import Role, load_role


def register(app: typer.Typer) -> None:
    app.command("restart")(restart)
    app.command("agent")(agent)


def restart(ctx: typer.Context, role: str = typer.Argument(..., help="The role to restart.")) -> None:
    """Restart one agent of the running organisation (not counted as a crash)."""
    s = settings(ctx)
    pid = with_client(s, lambda c: c.restart_agent(role))
    console.print(f"{role} restarted (pid {pid or '-'})")


def agent(
    ctx: typer.Context,
    role: str = typer.Argument(..., help="The role to run."),
    autonomous: bool = typer.Option(False, "--autonomous", help="Run until stopped."),
    json_out: bool = JsonOpt,
) -> None:
    """Run one role agent (--autonomous), or print its status and unread inbox."""
    s = settings(ctx)
    chosen = load_role(s.agents_dir, role)
    if autonomous:
        from echo.org.__main__ import serve

        raise typer.Exit(serve(s, chosen))
    _agent_once(s, chosen, json_out)


def _agent_once(s: Settings, role: Role, json_out: bool) -> None:
    info = with_client(s, lambda c: c.overview(role.name))
    if json_out:
        emit_json(info)
        return
    console.print(
        f"[bold]{escape(info.title)}[/] ({info.role}): {info.state}, "
        f"{len(info.unread)} unread (cursor {info.cursor})"
    )
    console.print("recent messages:" if info.recent else "no messages yet")
    for m in info.recent:
        mark = "" if m["read"] else " [yellow](unread)[/]"
        console.print(f"  #{m['id']} {m['from_role']} → {m['to_role']}: {escape(m['subject'])}{mark}")
    if info.tasks:
        console.print("working on:")
        for t in info.tasks:
            console.print(f"  task {t['task_id']} {t['status']}: {escape(t['task_description'])}")
    else:
        console.print("working on: nothing (no running or pending task)")
