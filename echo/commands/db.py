"""`echoctl db`: migrate the schema and say which database is in use."""

from __future__ import annotations

import typer
from rich.table import Table

from echo import db
from echo.commands._common import JsonOpt, console, emit_json, run, settings

app = typer.Typer(help="The Postgres database: migrations and status.", no_args_is_help=True)


@app.command()
def migrate(ctx: typer.Context, json_out: bool = JsonOpt) -> None:
    """Apply the SQL migrations that are missing (safe to run any number of times)."""
    s = settings(ctx)

    async def body() -> list[str]:
        with console.status("migrating…") if not json_out else _nullcontext():
            return [m.path.name for m in await db.migrate(s)]

    applied = run(body)
    if json_out:
        emit_json({"applied": applied, "namespace": s.namespace})
    elif applied:
        console.print(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        console.print("schema is up to date")


@app.command()
def status(ctx: typer.Context, json_out: bool = JsonOpt) -> None:
    """Which database is in use (password hidden), its version and the schema version."""
    s = settings(ctx)

    async def body() -> dict[str, object]:
        async with db.connection(s) as conn:
            with db.translate_errors(s, "read the database status"):
                server = await conn.fetchval("SHOW server_version")
                version = await db.schema_version(conn)
        latest = max((m.version for m in db.migrations()), default=0)
        return {
            "database": db.describe(s),
            "embedded": s.database_url is None,
            "namespace": s.namespace,
            "server_version": server,
            "schema_version": version,
            "latest_migration": latest,
            "up_to_date": version >= latest,
        }

    info = run(body)
    if json_out:
        emit_json(info)
        return
    table = Table(show_header=False, box=None)
    for key, value in info.items():
        table.add_row(key, str(value))
    console.print(table)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
