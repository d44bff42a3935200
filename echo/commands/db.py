"""`echoctl db`: migrate the schema and say which database is in use."""

from __future__ import annotations

import typer
from rich.table import Table

from echo import db
from echo.commands._common import JsonOpt, console, emit_json, run, settings
from echo.org.node import lifecycle

app = typer.Typer(help="The Postgres database: migrations, status, the embedded server.",
                  no_args_is_help=True)


@app.command()
def migrate(ctx: typer.Context, json_out: bool = JsonOpt) -> None:
    """Apply the SQL migrations that are missing (safe to run any number of times)."""
    s = settings(ctx)

    async def body() -> list[str]:
        with console.status("migrating…") if not json_out else _nullcontext():
            return [m.path.name for m in await db.migrate(s.database)]

    applied = run(body)
    if json_out:
        emit_json({"applied": applied, "namespace": s.namespace})
    elif applied:
        console.print(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        console.print("schema is up to date")


@app.command()
def stop(
    ctx: typer.Context,
    purge: bool = typer.Option(False, "--purge", help="Also delete the embedded server's data."),
) -> None:
    """Stop the embedded Postgres of this state directory (not under a running organisation)."""
    s = settings(ctx)
    for line in run(lambda: lifecycle.stop(s, purge=purge)):
        console.print(line)


@app.command()
def status(ctx: typer.Context, json_out: bool = JsonOpt) -> None:
    """Which database is in use (password hidden), its version and the schema version;
    for the embedded server also where its data lives, its pid and who is connected."""
    s = settings(ctx)
    server = run(lambda: lifecycle.server_state(s))
    if server is not None and server.pid is None:
        shown = {"database": db.describe(s.database), "embedded": True, "namespace": s.namespace}
        _print_server(shown, server, json_out)
        return

    info = run(lambda: lifecycle.database_status(s))
    _print_server(info, server, json_out)


def _print_server(info: dict[str, object], server: lifecycle.ServerState | None, json_out: bool) -> None:
    if server is not None:
        info["server"] = server.as_dict()
    if json_out:
        emit_json(info)
        return
    table = Table(show_header=False, box=None)
    for key, value in info.items():
        if key != "server":
            table.add_row(key, str(value))
    if server is not None:
        table.add_row("server", f"pid {server.pid}" if server.pid else "not running")
        table.add_row("data", str(server.data_dir) + ("" if server.exists else " (none yet)"))
        if server.link != server.data_dir.parent:
            table.add_row("", f"(linked from {server.link})")
        table.add_row("socket", f"{server.socket_dir} port {server.port}")
        org = f"organisation pid {server.organisation_pid}" if server.organisation_pid else "no organisation"
        users = ", ".join(f"{c['application']} (pid {c['pid']})" for c in server.clients) or "none"
        table.add_row("used by", f"{org}; connections: {users}")
    console.print(table)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
