"""`echoctl down`: stop the running organisation, then the embedded Postgres it ran on.

It asks the organisation over its control socket (echo.org.node.control) and signals it;
agents that outlived their supervisor are stopped too. The embedded server is
stopped only once nothing else of the state directory uses it (echo.org.node.lifecycle)."""

from __future__ import annotations

import contextlib
import os
import time

import typer

from echo.commands._common import console, run, settings
from echo.config import Settings
from echo.errors import EchoError
from echo.org.inputs import check_seconds
from echo.org.node import control, lifecycle
from echo.org.node.state import live_agents, mark_stopped, pid_alive, read_org, running_org


def register(app: typer.Typer) -> None:
    app.command("down")(down)


def down(
    ctx: typer.Context, timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait.")
) -> None:
    """Stop the running organisation gracefully (agents in reverse start order), then
    the embedded Postgres it ran on once nothing else uses it."""
    check_seconds(timeout, "--timeout")
    s = settings(ctx)
    record = running_org(s)
    orphans = live_agents(s, read_org(s))
    if record is None and not orphans:
        console.print("no organisation is running")
        _stop_server(s)
        return
    server_pid = lifecycle.running_pid(s)
    if record is not None:
        with contextlib.suppress(EchoError):
            run(lambda: control.request(s, {"command": "down"}, within=10))
        if pid_alive(record.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, 15)
    else:  # agents that outlived their supervisor: stop them (they release their leases)
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)
    deadline = time.monotonic() + timeout
    left = [record.pid] if record is not None else []

    def alive() -> bool:
        return any(pid_alive(p) for p in left) or bool(live_agents(s, read_org(s)))

    with console.status("stopping the organisation…"):
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)
    if alive():
        raise EchoError(
            f"the organisation of {s.state_dir} did not stop within {timeout:g} s "
            f"(still alive: {', '.join(map(str, left + live_agents(s, read_org(s))))})"
        )
    if record is None:  # no supervisor to record it: the agents it left are gone now
        mark_stopped(s)
    console.print("organisation stopped")
    _stop_server(s, server_pid)


def _stop_server(s: Settings, was: int | None = None) -> None:
    line = run(lambda: lifecycle.stop_if_unused(s.database, was=was))
    if line:
        console.print(line)
