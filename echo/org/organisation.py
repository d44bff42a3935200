"""The organisation: one supervised OS process per role agent (`echoctl up`).

Each agent runs as its own OS process under a supervisor of its own, so a crash in
one agent never touches another, and a crashed agent is restarted and catches up
from its cursor (a restart takes its role's lease back at once: echo/org/leases.py).

    org (one_for_one, gives up at the first subtree that gives up)
    ├── ceo           agent supervisor (3 restarts in 5 s by default, this agent's only)
    │   └── ceo       the agent's OS process
    ├── cto ...

Intensity is each agent's: six agents killed at once are six single restarts. An
agent that crashes in a loop past its own intensity stops its subtree, and with it
the node's top supervisor; the node's heart (echo/org/heart.py) then starts every
agent anew after a backoff, unless `up --no-heart`, when the organisation stops.
Either way the line says which agent failed, how often within which window, and
its last error.

Staggered start is the supervisor's ordered, synchronous start: an agent counts as
started only once it prints its ready line, so the next one starts after it (plus
`stagger_delay`). Without staggering, every agent is started as soon as it is
spawned and they come up together.

Other terminals see the organisation through the state directory (echo.org.state)
and talk to it over its control socket (echo.org.control).

The operator console (`python -m echo.console`, an OS process) runs beside the
agents under a supervisor of its own, with a restart backoff: it is restarted like
any child, but its failures never count against the agents' restart intensity, so
a console that cannot start (its port is taken) or crashes in a loop never takes
the organisation down. It starts after the agents and stops before them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio

from echo.config import Settings, private_dir
from echo.db import describe
from echo.org.health import read_health_file
from echo.org.heart import Heart
from echo.org.leases import PREDECESSOR_FLAG, Predecessor
from echo.org.roles import Role
from echo.org.state import (
    READY_FLAG,
    READY_LINE,
    AgentRecord,
    OrgRecord,
    log_file,
    now_iso,
    pid_alive,
    read_org,
    write_org,
)
from echo.runtime import (
    NORMAL,
    Backoff,
    ChildSpec,
    Down,
    ExitReason,
    OSProcess,
    Process,
    ProcessExited,
    Supervisor,
    SupervisorEscalation,
    gave_up,
    is_normal,
    monitor,
)

log = logging.getLogger(__name__)

#: The console's restarts: 1 s, 2 s, 4 s ... at most 30 s apart.
CONSOLE_BACKOFF = Backoff(initial=1.0, factor=2.0, max=30.0)


@dataclass(frozen=True)
class ConsoleOptions:
    """Where the organisation's console listens."""

    host: str = "127.0.0.1"
    port: int = 8765


def agent_argv(role: str, *, announce_ready: bool = False,
               predecessor: Predecessor | None = None) -> list[str]:
    """The agent process: `python -m echo.org ROLE` (what `echoctl agent ROLE
    --autonomous` runs, minus the CLI's imports), told which dead process it replaces."""
    return [sys.executable, "-m", "echo.org", *([READY_FLAG] if announce_ready else []),
            *([PREDECESSOR_FLAG, predecessor.arg()] if predecessor else []), role]


def reaped_predecessor(settings: Settings, role: str, previous: OSProcess | None) -> Predecessor | None:
    """The agent process this supervisor started last for `role`, once reaped: it is
    dead, so its restart may take over a lease that still names it (echo/org/leases.py)."""
    if previous is None or previous.pid is None or previous.returncode is None:
        return None
    return dead_predecessor(settings, role, previous.pid)


def dead_predecessor(settings: Settings, role: str, pid: int) -> Predecessor:
    """A dead agent process of this node as its successor is told it. Its epoch comes
    from its own heartbeat file, when it lived long enough to write one."""
    health = read_health_file(settings, role, stale_after=float("inf"))
    epoch = health.details.get("epoch") if health and health.pid == pid else None
    return Predecessor(pid, epoch if isinstance(epoch, int) and epoch > 0 else None)


def left_by_a_dead_up(settings: Settings) -> dict[str, Predecessor]:
    """The agents a previous `up` of this state directory left when it was killed: they
    died with it (the kernel's death signal), so no one reaped them here, but a pid that
    no longer exists on this host is as dead as a reaped one, and the first start of
    each role may take over the lease that still names it."""
    record = read_org(settings)
    if record is None or pid_alive(record.pid):
        return {}
    return {role: dead_predecessor(settings, role, rec.pid)
            for role, rec in record.agents.items() if rec.pid and not pid_alive(rec.pid)}


class AgentProcess(OSProcess):
    """An agent's OS process, reporting its readiness to the organisation's record."""

    def __init__(self, on_ready: Callable[[AgentProcess], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_ready = on_ready

    def _ready(self) -> None:
        super()._ready()
        self._on_ready(self)


class Pause(Process):
    """A temporary child that is 'started' after `delay` seconds: the stagger delay."""

    def __init__(self, delay: float) -> None:
        super().__init__(name="stagger-delay")
        self.delay = delay

    async def _main(self) -> str:
        await anyio.sleep(self.delay)
        self._ready()
        return NORMAL


def last_error_line(path: os.PathLike[str] | str) -> str:
    """The last line of an agent's log that reports an error, if any."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - 16384, 0))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if re.search(r"\b(error|exception|traceback)\b", line, re.IGNORECASE):
            return line.strip()
    return ""


def describe_exit(reason: object) -> str:
    """An exit reason as a person reads it: a signal by name, a status by number."""
    if isinstance(reason, ProcessExited):
        if reason.returncode < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-reason.returncode).name}"
        return f"exit status {reason.returncode}"
    return reason if isinstance(reason, str) else repr(reason)


class Organisation:
    """Runs the role agents as supervised OS processes until stopped."""

    def __init__(
        self,
        settings: Settings,
        roles: list[Role],
        *,
        staggered: bool = True,
        stagger_delay: float = 0.0,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        agent_shutdown: float = 15.0,
        start_timeout: float = 60.0,
        on_event: Callable[[str, AgentRecord], None] | None = None,
        console: ConsoleOptions | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.roles = roles
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        #: Told each failure line the heart restarts the node after (`up` prints it).
        self.on_failure = on_failure or (lambda _line: None)
        self.heart = Heart() if settings.heart else None
        self._swapping = anyio.Lock()
        self.staggered = staggered
        self.stagger_delay = stagger_delay
        self.agent_shutdown = agent_shutdown
        self.start_timeout = start_timeout
        self.on_event = on_event or (lambda _event, _rec: None)
        #: Roles a person asked to restart (`echoctl restart`): their next start is not a crash.
        self.asked_restarts: set[str] = set()
        #: The last agent process started per role: its restart is told it is dead.
        self.processes: dict[str, OSProcess] = {}
        self.left_behind = left_by_a_dead_up(settings)
        self.record = OrgRecord(
            pid=os.getpid(),
            namespace=settings.namespace,
            database=describe(settings),
            agents={r.name: AgentRecord(role=r.name) for r in roles},
        )
        self.supervisor = self._top()
        self.env = {**os.environ, **settings.child_env(), "PYTHONUNBUFFERED": "1"}
        self.env.pop("CLAUDECODE", None)
        self.console = console
        if console is not None:
            self.record.console = AgentRecord(role="console")

    def _top(self) -> Supervisor:
        """The node's top supervisor: it restarts nothing itself (max_restarts=0), so
        an agent subtree that gave up stops it, and the heart decides what follows."""
        return Supervisor(self._specs(), strategy="one_for_one", max_restarts=0,
                          max_seconds=self.max_seconds, name="org")

    def _agent_supervisor(self, role: str) -> Supervisor:
        """One agent's subtree: the intensity of `up --max-restarts/--max-seconds`,
        counted for this agent alone. Named as the role, like its one child."""
        return Supervisor(
            [ChildSpec(role, self._factory(role), shutdown=self.agent_shutdown)],
            strategy="one_for_one", max_restarts=self.max_restarts,
            max_seconds=self.max_seconds, name=role)

    def _specs(self) -> list[ChildSpec]:
        specs: list[ChildSpec] = []
        for index, role in enumerate(self.roles):
            if self.staggered and self.stagger_delay > 0 and index > 0:
                specs.append(
                    ChildSpec(
                        f"delay-{role.name}",
                        partial(Pause, self.stagger_delay),
                        restart="temporary",
                    )
                )
            specs.append(ChildSpec(role.name, partial(self._agent_supervisor, role.name),
                                   type="supervisor"))
        return specs

    def _factory(self, role: str) -> Callable[[], Process]:
        def start() -> Process:
            rec = self.record.agents[role]
            if rec.started_at is not None and role not in self.asked_restarts:
                rec.restarts += 1
            self.asked_restarts.discard(role)
            rec.state = "restarting" if rec.started_at else "starting"
            self.save()
            predecessor = (reaped_predecessor(self.settings, role, self.processes[role])
                           if role in self.processes else self.left_behind.pop(role, None))
            proc = AgentProcess(
                self._ready,
                argv=agent_argv(role, announce_ready=self.staggered, predecessor=predecessor),
                ready=re.compile(rf"^{READY_LINE}\b") if self.staggered else None,
                log_ready_line=False,
                start_timeout=self.start_timeout,
                env=self.env,
                log_path=log_file(self.settings, role),
                name=role,
                die_with_parent=True,
            )
            monitor(proc, self._down)
            self.processes[role] = proc
            return proc

        return start

    def _ready(self, proc: AgentProcess) -> None:
        rec = self.record.agents[str(proc.name)]
        rec.pid = proc.pid
        rec.started_at = now_iso()
        rec.state = "running"
        self.save()
        self.on_event("ready", rec)

    def _down(self, down: Down) -> None:
        role = str(down.process.name)
        rec = self.record.agents[role]
        rec.last_exit = describe_exit(down.reason)
        if is_normal(down.reason):
            rec.state = "stopped"
        else:
            rec.state = "exited"
            logged = last_error_line(log_file(self.settings, role))
            rec.last_error = f"{rec.last_exit}: {logged}" if logged else rec.last_exit
        self.save()
        self.on_event(rec.state, rec)

    def save(self) -> None:
        write_org(self.settings, self.record)

    # ------------------------------------------------------------------ console
    def _console_process(self) -> Process:
        assert self.console is not None and self.record.console is not None
        rec = self.record.console
        if rec.started_at is not None:
            rec.restarts += 1
        rec.state = "restarting" if rec.started_at else "starting"
        self.save()
        argv = [sys.executable, "-m", "echo.console",
                "--host", self.console.host, "--port", str(self.console.port)]
        proc = AgentProcess(
            self._console_ready,
            argv=argv,
            ready=re.compile(r"^ECHO-READY console (\S+)"),
            start_timeout=self.start_timeout,
            env=self.env,
            log_path=log_file(self.settings, "console"),
            name="console",
            die_with_parent=True,
        )
        monitor(proc, self._console_exit)
        return proc

    def _console_ready(self, proc: AgentProcess) -> None:
        from echo.org.console_address import read_listening  # the console's own record of its URL

        rec = self.record.console
        assert rec is not None
        rec.pid, rec.started_at, rec.state = proc.pid, now_iso(), "running"
        here = read_listening(self.settings)
        self.record.console_url = here.url if here and here.pid == proc.pid else None
        self.save()
        self.on_event("ready", rec)

    def _console_exit(self, down: Down) -> None:
        rec = self.record.console
        assert rec is not None
        rec.last_exit = describe_exit(down.reason)
        rec.state = "stopped" if is_normal(down.reason) else "exited"
        if not is_normal(down.reason):
            logged = last_error_line(log_file(self.settings, "console"))
            rec.last_error = f"{rec.last_exit}: {logged}" if logged else rec.last_exit
        self.record.console_url = None
        self.save()
        self.on_event(rec.state, rec)

    async def _run_console(self) -> None:
        """Keep the console up beside the agents until cancelled (see the module doc)."""
        retry = CONSOLE_BACKOFF.attempts()
        while True:
            sup = Supervisor(
                [ChildSpec("console", self._console_process, backoff=CONSOLE_BACKOFF, shutdown=10.0)],
                strategy="one_for_one",
                name="console",
            )
            try:
                await sup.start()
            except Exception as exc:  # its first start failed: say so, try again later
                log.warning("the console could not start: %s", exc)
                await retry.wait()
                continue
            try:
                reason = await sup.wait()
                log.warning("the console's supervisor gave up (%s); starting it again", reason)
            finally:
                with anyio.CancelScope(shield=True):
                    await sup.stop()
            await retry.wait()

    def failure_line(self, exc: SupervisorEscalation) -> str:
        """Which agent gave up, how often it failed within which window, and why: the
        agent subtree's own escalation, inside the top supervisor's."""
        inner = gave_up(exc.last_error) or exc
        role = str(inner.child_id)
        rec = self.record.agents.get(role)
        last = (rec.last_error if rec else None) or describe_exit(inner.last_error)
        return (
            f"agent {role} failed {inner.restarts} time(s) within {inner.max_seconds:g} s "
            f"(limit {inner.max_restarts} restarts in {inner.max_seconds:g} s); "
            f"last error: {last}"
        )

    def _exit_line(self, reason: ExitReason) -> str:
        escalation = gave_up(reason)  # ("shutdown", escalation), as OTP's shutdown
        if escalation is not None:
            return self.failure_line(escalation)
        return f"the organisation's supervisor exited: {reason!r}"

    async def _keep_up(self, stop: anyio.Event) -> str | None:
        """Wait for the top supervisor; when it gives up, restart the node with the
        heart's backoff (echo/org/heart.py) or, without a heart, return the failure.
        Returns None once `stop` is set (a person stops the organisation)."""
        while True:
            reason = await self.supervisor.wait()
            if stop.is_set():
                return None
            failure = self._exit_line(reason)
            while True:
                if self.heart is None:
                    return f"{failure}, so the organisation stopped"
                delay = self.heart.next_delay()
                line = (f"{failure}; the node restarts itself in {delay:g} s (node restart "
                        f"{self.heart.restarts}; `up --no-heart` stops instead)")
                log.error("%s", line)
                self.record.state, self.record.failure = "restarting", line
                self.record.node_restarts, self.record.last_node_restart = self.heart.restarts, line
                self.save()
                self.on_failure(line)
                with anyio.move_on_after(delay):
                    await stop.wait()
                async with self._swapping:  # `run` stops whichever supervisor is current
                    if stop.is_set():
                        return None
                    self.supervisor = self._top()
                    try:
                        await self.supervisor.start()
                        break
                    except Exception as exc:  # counts as the node failing again
                        failure = f"the organisation could not start again: {exc}"
            self.heart.started()
            self.record.state, self.record.failure = "running", None
            self.save()

    async def run(
        self,
        *,
        stop: anyio.Event,
        on_started: Callable[[], None] | None = None,
    ) -> str | None:
        """Start every agent, run until `stop` is set or intensity is exceeded.

        Returns None after a clean stop, or the one-line failure.
        """
        private_dir(self.settings.log_dir)
        self.save()
        failure: str | None = None
        try:
            await self.supervisor.start()
        except Exception as exc:  # a start failure of any child: say which and why
            failure = f"the organisation could not start: {exc}"
            self.record.state, self.record.failure = "failed", failure
            self.save()
            return failure
        self.record.state = "running"
        self.save()
        if on_started is not None:
            on_started()
        console_scope, console_done = anyio.CancelScope(), anyio.Event()

        async def run_console() -> None:
            try:
                with console_scope:
                    await self._run_console()
            finally:
                console_done.set()

        async with anyio.create_task_group() as tg:
            if self.console is not None:
                tg.start_soon(run_console)

            async def watch_supervisor() -> None:
                nonlocal failure
                failure = await self._keep_up(stop)
                stop.set()

            tg.start_soon(watch_supervisor)
            await stop.wait()
            self.record.state = "stopping" if failure is None else "failed"
            self.save()
            console_scope.cancel()  # the console stops first: it started last
            with anyio.CancelScope(shield=True):
                if self.console is not None:
                    await console_done.wait()
                async with self._swapping:
                    await self.supervisor.stop()
            tg.cancel_scope.cancel()
        self.record.state = "stopped" if failure is None else "failed"
        self.record.failure = failure
        self.save()
        return failure


def install_stop_signals(stop: anyio.Event) -> Callable[[], None]:
    """SIGTERM and SIGINT set `stop` (graceful shutdown); returns an undo function."""
    import asyncio

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def undo() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    return undo
