"""`echoctl logs`: an agent's log file (or the organisation's, or the console's).

Task outcomes and workflow steps carry role, task and workflow fields, so --task and
--workflow select the lines about one (echo.logs); --json prints them as objects."""

from __future__ import annotations

import json
import sys
import time

import typer

from echo import logs as echo_logs
from echo.commands._common import settings
from echo.errors import UsageError
from echo.org.node.state import log_file
from echo.org.roles import load_role


def register(app: typer.Typer) -> None:
    app.command("logs")(logs)


def logs(
    ctx: typer.Context,
    role: str = typer.Argument(..., help="The role whose log to show (or 'org', or 'console')."),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing new lines."),
    lines: int = typer.Option(50, "-n", "--lines", min=0, help="How many lines to show first."),
    task: int | None = typer.Option(None, "--task", help="Only lines about this task.", show_default=False),
    workflow: str | None = typer.Option(
        None, "--workflow", help="Only lines about this workflow.", show_default=False
    ),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per line (time, level, "
                                  "logger, message, fields)."),
) -> None:
    """Show an agent's log file (task outcomes and workflow steps carry role, task and
    workflow fields: --task and --workflow filter on them)."""
    s = settings(ctx)
    if role not in ("org", "console"):
        load_role(s.agents_dir, role)
    path = s.log_dir / "org.log" if role == "org" else log_file(s, role)
    if not path.exists():
        raise UsageError(f"no log for {role} yet at {path}; start the organisation with `echoctl up`")
    wanted = {k: str(v) for k, v in {"task": task, "workflow": workflow}.items() if v is not None}

    def show(text: list[str]) -> None:
        if json_out or wanted:
            for entry in echo_logs.select(text, wanted):
                raw = entry.pop("raw")
                sys.stdout.write((json.dumps(entry) if json_out else raw) + "\n")
        else:
            sys.stdout.writelines(line + "\n" for line in text)
        sys.stdout.flush()

    with open(path, "rb") as fh:
        every = fh.read().decode(errors="replace").splitlines()
        show(every[-lines:] if lines and not wanted else (every if wanted else []))
        pending = ""
        while follow:
            chunk = fh.read()
            if chunk:
                *complete, pending = (pending + chunk.decode(errors="replace")).split("\n")
                show(complete)
            else:
                time.sleep(0.2)
