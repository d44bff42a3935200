"""`echoctl` (also `python -m echo`): the command line of ECHO.

The console script is `echoctl`, not `echo`, because the shell's builtin `echo`
would shadow it. Every command group lives in `echo/commands/<area>.py`; this
module assembles them and turns any `EchoError` into one line and an exit code
(0 success, 1 failure, 2 usage error).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from echo import __version__
from echo.commands import bus as bus_commands
from echo.commands import db as db_commands
from echo.commands import org as org_commands
from echo.commands import tasks as task_commands
from echo.errors import EchoError

app = typer.Typer(
    name="echoctl",
    help="ECHO: a supervised organisation of Claude role agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db_commands.app, name="db")
bus_commands.register(app)
task_commands.register(app)
org_commands.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"echoctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    database_url: str | None = typer.Option(
        None, "--database-url", help="libpq DSN (default: ECHO_DATABASE_URL, else embedded)",
        show_default=False,
    ),
    redis_url: str | None = typer.Option(
        None, "--redis-url", help="Redis URL (default: ECHO_REDIS_URL, else NOTIFY)",
        show_default=False,
    ),
    namespace: str | None = typer.Option(None, "--namespace", help="schema and channel prefix"),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="state and log directory"),
    log_level: str | None = typer.Option(None, "--log-level", help="DEBUG, INFO, WARNING, ERROR"),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Global flags override config/*.toml and ECHO_* variables."""
    ctx.obj = {
        "database_url": database_url,
        "redis_url": redis_url,
        "namespace": namespace,
        "state_dir": state_dir,
        "log_level": log_level,
    }
    logging.basicConfig(
        level=(log_level or "WARNING").upper() if log_level else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main() -> None:
    """Entry point: one clear line instead of a traceback for every ECHO error.

    Typer's standalone mode already exits 2 on usage errors; what is left to
    translate is the `EchoError` family, which a command raises on purpose.
    """
    try:
        app()
    except EchoError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
