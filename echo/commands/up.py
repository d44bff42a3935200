"""`echoctl up`: start the organisation's agents, in the foreground or detached.

In the foreground it runs the organisation (echo.org.node.organisation) with its control
socket (echo.org.node.control) and this node's seat (echo.org.node.nodes), printing each
agent's start and exit; with --detach it starts itself in the background and returns
once its agents settled, saying where the console answers. `echoctl down` stops either."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import anyio
import typer
from rich.markup import escape

from echo import db
from echo.commands._common import console, err_console, run, settings
from echo.config import Settings
from echo.console.auth import exposure_warning, token_path
from echo.errors import EchoError, StoreUnavailable, UsageError
from echo.org.console_address import read_listening
from echo.org.node import control
from echo.org.node.children import last_error_line
from echo.org.node.console_keeper import ConsoleOptions
from echo.org.node.nodes import NodeSeat, claim_node, keep_node
from echo.org.node.organisation import Organisation, install_stop_signals
from echo.org.node.state import AgentRecord, log_file, pid_alive, read_org, running_org
from echo.org.roles import Role, load_role, load_roles
from echo.org.status import wait_settled
from echo.paths import private_dir


def _roles(s: Settings, names: list[str] | None) -> list[Role]:
    everything = load_roles(s.agents_dir)
    if not everything:
        raise UsageError(
            f"no roles found under {s.agents_dir}; set ECHO_AGENTS_DIR, or write an editable "
            "organisation with `echoctl init DIR` and run echoctl from DIR"
        )
    if not names:
        return list(everything.values())
    wanted = [n.strip() for name in names for n in name.split(",") if n.strip()]
    for name in wanted:
        load_role(s.agents_dir, name)  # raises UnknownRole naming the known ones
    return [r for r in everything.values() if r.name in wanted]


def register(app: typer.Typer) -> None:
    app.command("up")(up)


def up(
    ctx: typer.Context,
    staggered: bool = typer.Option(
        False, "--staggered", help="Start each agent after the previous one is ready."
    ),
    stagger_delay: float = typer.Option(0.0, "--stagger-delay", min=0, help="Extra seconds between agents."),
    roles: list[str] | None = typer.Option(
        None, "--roles", metavar="ROLES", help="Only these roles (repeat or comma-separate)."
    ),
    detach: bool = typer.Option(False, "--detach", help="Run in the background and return once started."),
    max_restarts: int = typer.Option(3, "--max-restarts", min=0, help="Restart intensity: restarts..."),
    max_seconds: float = typer.Option(5.0, "--max-seconds", min=0.1, help="...within this many seconds."),
    console_host: str | None = typer.Option(
        None, "--console-host", help="Where the console listens (default 127.0.0.1).", show_default=False),
    console_port: int | None = typer.Option(
        None, "--console-port", min=0, max=65535, help="The console's port (default 8765; 0: any free).",
        show_default=False),
    no_console: bool = typer.Option(False, "--no-console", help="Do not start the operator console."),
    no_heart: bool = typer.Option(
        False, "--no-heart",
        help="When an agent fails past its restart intensity, stop (default: restart the node "
             "with backoff)."),
    node: str | None = typer.Option(
        None, "--node", help="This node's name (default: the host name); unique per organisation."
    ),
    prefer: list[str] | None = typer.Option(
        None, "--prefer", metavar="ROLES",
        help="Roles this node takes back when it returns (repeat or comma-separate).",
    ),
) -> None:
    """Start the role agents as supervised processes (foreground unless --detach), and the console.

    Each role is active on one agent process of the whole organisation (a lease in
    Postgres); an agent whose role is active elsewhere stands by and takes over."""
    overrides: dict[str, Any] = {"console_host": console_host, "console_port": console_port,
                                 "console": False if no_console else None, "node": node,
                                 "heart": False if no_heart else None}
    s = settings(ctx, **overrides)
    chosen = _roles(s, roles)
    if prefer:
        preferred = _roles(s, prefer)
        offered = {r.name for r in chosen}
        if not_offered := [r.name for r in preferred if r.name not in offered]:
            raise UsageError(
                f"--prefer names {', '.join(not_offered)}, which this node does not run; "
                "add it to --roles or drop it from --prefer"
            )
        s = settings(ctx, **overrides, prefer=",".join(r.name for r in preferred))
    existing = running_org(s)
    if existing:
        raise EchoError(
            f"an organisation is already running from {s.state_dir} (pid {existing.pid}); "
            "`echoctl down` first"
        )
    if s.console:  # a taken port is refused now, not found in console.log later
        from echo.console.server import UP_FLAGS, check_free

        check_free(s.console_host, s.console_port, UP_FLAGS)
    private_dir(s.state_dir)
    private_dir(s.log_dir)
    if detach:
        _detach(ctx, s, staggered, stagger_delay, chosen, max_restarts, max_seconds)
        return
    seat: NodeSeat | None = None

    if s.console:
        warning = exposure_warning(s.console_host, tls=False)
        if warning:
            err_console.print(f"[yellow]warning:[/] {warning}")

    def on_event(event: str, rec: AgentRecord) -> None:
        mark = {"ready": "[green]✓[/]", "exited": "[red]✗[/]", "stopped": "[dim]■[/]"}
        if rec.role == "console" and event == "ready":
            here = read_listening(s)
            console.print(f"[green]✓[/] console at {here.url if here else '?'} "
                          f"(token in {token_path(s)})")
            return
        console.print(
            f"{mark.get(event, '·')} {rec.role:<18} {event:<8} pid {rec.pid}"
            + (f"  restarts {rec.restarts}" if rec.restarts else "")
            + (f"  [dim]{escape(rec.last_error)}[/]" if event == "exited" and rec.last_error else "")
        )

    async def body() -> str | None:
        nonlocal seat
        with anyio.move_on_after(10):
            try:
                await db.migrate(s.database)
                seat = await claim_node(s, pid_alive)
            except StoreUnavailable as exc:
                err_console.print(f"[yellow]warning:[/] {exc}; agents start degraded and recover")
        org = Organisation(
            s,
            chosen,
            staggered=staggered,
            stagger_delay=stagger_delay,
            max_restarts=max_restarts,
            max_seconds=max_seconds,
            on_event=on_event,
            console=ConsoleOptions(s.console_host, s.console_port) if s.console else None,
            on_failure=lambda line: typer.secho(f"error: {line}", err=True, fg=typer.colors.RED),
        )
        stop = anyio.Event()
        undo = install_stop_signals(stop)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(control.serve, s, org, stop)
                if seat is not None:
                    tg.start_soon(keep_node, s, seat)
                console.print(
                    f"starting {len(chosen)} agent(s){' staggered' if staggered else ''} "
                    f"(logs in {s.log_dir}); Ctrl-C or `echoctl down` stops them"
                )
                failure = await org.run(
                    stop=stop, on_started=lambda: console.print("[bold green]organisation up[/]")
                )
                tg.cancel_scope.cancel()
            return failure
        finally:
            undo()

    failure = run(body)
    if failure:
        typer.secho(f"error: {failure}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1)
    console.print("organisation stopped")


def _detach(
    ctx: typer.Context,
    s: Settings,
    staggered: bool,
    delay: float,
    chosen: list[Role],
    max_restarts: int,
    max_seconds: float,
) -> None:
    argv = [
        sys.executable,
        "-m",
        "echo",
        "up",
        "--stagger-delay",
        str(delay),
        "--roles",
        ",".join(r.name for r in chosen),
        "--max-restarts",
        str(max_restarts),
        "--max-seconds",
        str(max_seconds),
        "--node",
        s.node,
    ]
    if s.prefer:
        argv += ["--prefer", s.prefer]
    if staggered:
        argv.append("--staggered")
    env = {**os.environ, **s.child_env()}
    out = open(s.log_dir / "org.log", "ab")  # noqa: SIM115 - handed to the child
    os.chmod(s.log_dir / "org.log", 0o600)
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, start_new_session=True
    )
    out.close()
    deadline = time.monotonic() + 120
    with console.status("starting the organisation…"):
        while time.monotonic() < deadline:
            record = read_org(s)
            if proc.poll() is not None:
                if proc.returncode == UsageError.exit_code:  # e.g. a node name in use
                    raise UsageError(last_error_line(s.log_dir / "org.log").removeprefix("error: "))
                failure = record.failure if record and record.pid == proc.pid else None
                raise EchoError(
                    failure or f"the organisation exited ({proc.returncode}); see {s.log_dir}/org.log"
                )
            if record and record.pid == proc.pid and record.state == "running":
                degraded = wait_settled(s, list(record.agents))
                if degraded:
                    raise EchoError(
                        f"the organisation runs in the background (pid {proc.pid}) but "
                        f"{len(degraded)} agent(s) are degraded: {degraded[0]}; they retry on "
                        "their own (`echoctl status`), `echoctl down` stops them"
                    )
                console.print(f"organisation up in the background (pid {proc.pid}); `echoctl status`")
                if s.console:
                    _print_console_url(s, proc.pid)
                return
            time.sleep(0.1)
    raise EchoError(f"the organisation did not start within 120 s; see {s.log_dir}/org.log")


def _print_console_url(s: Settings, org_pid: int, within: float = 30.0) -> None:
    """The console's address once it answers (it starts after the agents)."""
    deadline = time.monotonic() + within
    with console.status("starting the console…"):
        while time.monotonic() < deadline:
            record = read_org(s)
            if record is None or record.pid != org_pid:
                return
            if record.console_url:
                console.print(f"console at {record.console_url} (token in {token_path(s)})")
                return
            started = record.console
            if started is not None and started.state == "exited" and started.last_error:
                raise EchoError(
                    f"the organisation runs in the background (pid {org_pid}) but its console "
                    f"did not start ({started.last_error}); it retries on its own, "
                    "`echoctl down` stops the organisation")
            time.sleep(0.1)
    console.print(f"the console is not up yet; see {log_file(s, 'console')}")
