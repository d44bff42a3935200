"""`echoctl up | down | status | logs | restart | agent`: running the organisation.

`status`, `restart` and `agent` ask echo.org.client; `up` and `down` run and stop
the organisation's OS processes (echo.org.organisation, echo.org.control)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import typer
from rich.markup import escape

from echo import db
from echo import logs as echo_logs
from echo.commands._common import (
    JsonOpt,
    console,
    emit_json,
    err_console,
    plain_table,
    role_column,
    run,
    settings,
    with_client,
)
from echo.commands.budget import governor_lines
from echo.config import Settings, private_dir
from echo.console.auth import exposure_warning, token_path
from echo.errors import EchoError, StoreUnavailable, UsageError
from echo.org import control, lifecycle
from echo.org.console_address import read_listening
from echo.org.inputs import check_seconds
from echo.org.nodes import NodeSeat, claim_node, keep_node
from echo.org.organisation import ConsoleOptions, Organisation, install_stop_signals, last_error_line
from echo.org.roles import Role, load_role, load_roles
from echo.org.state import AgentRecord, live_agents, log_file, mark_stopped, pid_alive, read_org, running_org
from echo.org.status import AgentProcessStatus, wait_settled


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
    app.command("init")(init)
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
    app.command("logs")(logs)
    app.command("restart")(restart)
    app.command("agent")(agent)


def init(
    directory: Path = typer.Argument(Path("."), help="Where to write agents/, config/ and training/."),
    force: bool = typer.Option(False, "--force", help="Write into existing folders (same names replaced)."),
) -> None:
    """Write an editable copy of the default organisation (roles, config, training scenarios)."""
    from echo.org.scaffold import write_organisation

    written = write_organisation(directory, force=force)
    console.print(f"wrote {', '.join(p.name + '/' for p in written)} in {written[0].parent}")
    console.print(
        f"run echoctl from there (`cd {directory}`; `echoctl up`): it uses this organisation; "
        "edit agents/<role>/role.toml to change a role"
    )


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
                await db.migrate(s)
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
    line = run(lambda: lifecycle.stop_if_unused(s, was=was))
    if line:
        console.print(line)


def restart(ctx: typer.Context, role: str = typer.Argument(..., help="The role to restart.")) -> None:
    """Restart one agent of the running organisation (not counted as a crash)."""
    s = settings(ctx)
    pid = with_client(s, lambda c: c.restart_agent(role))
    console.print(f"{role} restarted (pid {pid or '-'})")


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
