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
from typing import Any

import typer

from echo import __version__
from echo.commands import agent as agent_commands
from echo.commands import approvals as approval_commands
from echo.commands import budget as budget_commands
from echo.commands import bus as bus_commands
from echo.commands import console as console_commands
from echo.commands import db as db_commands
from echo.commands import down as down_commands
from echo.commands import logs as logs_commands
from echo.commands import mcp as mcp_commands
from echo.commands import repo as repo_commands
from echo.commands import scaffold as scaffold_commands
from echo.commands import status as status_commands
from echo.commands import tasks as task_commands
from echo.commands import up as up_commands
from echo.commands import workflow as workflow_commands
from echo.config import check_log_level
from echo.errors import one_line, sole_error

try:  # recent Typer versions vendor click; older ones use click itself
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, UsageError  # type: ignore[no-redef,assignment,unused-ignore]

def _plain_flags() -> None:
    """Help lists a flag (`--json`, `--detach`, `--help`) without a value placeholder:
    typer 0.29 prints `<bool>` after each, as if it took a value. A value option keeps
    its type (`<int range>`) or its metavar."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_plain_flags()

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
scaffold_commands.register(app)
up_commands.register(app)
down_commands.register(app)
status_commands.register(app)
logs_commands.register(app)
agent_commands.register(app)
workflow_commands.register(app)
budget_commands.register(app)
console_commands.register(app)
repo_commands.register(app)
mcp_commands.register(app)
approval_commands.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"echoctl {__version__}")
        raise typer.Exit()


def _log_level(value: str | None) -> str | None:
    """A known level, upper case; anything else is a usage error like a bad option value."""
    if value is None:
        return None
    try:
        return check_log_level(value)
    except ValueError as exc:
        raise typer.BadParameter(f"unknown level '{one_line(value)}'; {exc}") from None


@app.callback()
def root(
    ctx: typer.Context,
    database_url: str | None = typer.Option(
        None, "--database-url", help="postgresql:// URL (default: ECHO_DATABASE_URL, else embedded)",
        show_default=False,
    ),
    redis_url: str | None = typer.Option(
        None, "--redis-url", help="Redis URL (default: ECHO_REDIS_URL, else NOTIFY)",
        show_default=False,
    ),
    namespace: str | None = typer.Option(None, "--namespace", help="schema and channel prefix"),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="state and log directory"),
    log_level: str | None = typer.Option(None, "--log-level", callback=_log_level,
                                         help="DEBUG, INFO, WARNING, ERROR"),
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
        level=log_level or logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _fail(message: str, code: int) -> None:
    line = " ".join(message.split())  # one line, whatever the message held
    typer.secho(f"error: {line}", err=True, fg=typer.colors.RED)
    sys.exit(code)


def main() -> None:
    """Entry point: run the command, then stop the embedded Postgres it used if nothing
    else uses it (echo.org.node.lifecycle): what a command starts, it stops."""
    from echo.org.node.lifecycle import release_embedded

    try:
        _main()
    finally:
        release_embedded()


def _main() -> None:
    """Entry point: one clear line instead of a traceback or a box for every error.

    Bad arguments (an unknown option, a missing argument, a value of the wrong
    type) exit 2 with one line naming the problem and where help is, like every
    `UsageError` a command raises; any other `EchoError` exits with its code.
    """
    try:
        code = app(standalone_mode=False)
    except UsageError as exc:
        if not exc.format_message().strip():  # no arguments: the help was shown
            sys.exit(exc.exit_code)
        where = exc.ctx.command_path if exc.ctx is not None else "echoctl"
        _fail(f"{exc.format_message()} (see `{where} --help`)", 2)
    except ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        sys.exit(130)
    except Exception as exc:  # an EchoError, maybe inside a task group's ExceptionGroup
        known = sole_error(exc)
        if known is None:
            raise
        _fail(str(known), known.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
