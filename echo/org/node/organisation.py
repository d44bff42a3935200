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
the node's top supervisor; the node's heart (echo/org/node/heart.py) then starts every
agent anew after a backoff, unless `up --no-heart`, when the organisation stops.
Either way the line says which agent failed, how often within which window, and
its last error.

Staggered start is the supervisor's ordered, synchronous start: an agent counts as
started only once it prints its ready line, so the next one starts after it (plus
`stagger_delay`). Without staggering, every agent is started as soon as it is
spawned and they come up together.

Other terminals see the organisation through the state directory (echo.org.node.state)
and talk to it over its control socket (echo.org.node.control).

The operator console runs beside the agents under a supervisor of its own
(echo/org/node/console_keeper.py), started after them and stopped before them.
"""

from __future__ import annotations

import logging
import os
import re
import signal
from collections.abc import Callable
from functools import partial

import anyio

from echo.config import Settings
from echo.db import describe
from echo.org.node.children import AgentProcess, Pause, describe_exit, last_error_line
from echo.org.node.console_keeper import ConsoleKeeper, ConsoleOptions
from echo.org.node.heart import Heart
from echo.org.node.predecessors import agent_argv, left_by_a_dead_up, reaped_predecessor
from echo.org.node.state import READY_LINE, AgentRecord, OrgRecord, log_file, now_iso, write_org
from echo.org.roles import Role
from echo.paths import private_dir
from echo.runtime import (
    ChildSpec,
    Down,
    ExitReason,
    OSProcess,
    Process,
    Supervisor,
    SupervisorEscalation,
    gave_up,
    is_normal,
    monitor,
)

log = logging.getLogger(__name__)


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
            database=describe(settings.database),
            agents={r.name: AgentRecord(role=r.name) for r in roles},
        )
        self.supervisor = self._top()
        self.env = {**os.environ, **settings.child_env(), "PYTHONUNBUFFERED": "1"}
        self.env.pop("CLAUDECODE", None)
        self.console = console
        if console is not None:
            self.record.console = AgentRecord(role="console")
        #: The console beside the agents (echo/org/node/console_keeper.py), when it runs.
        self.console_keeper = None if console is None else ConsoleKeeper(
            settings=settings, console=console, record=self.record, env=self.env,
            start_timeout=start_timeout, save=self.save, on_event=self.on_event)

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
        heart's backoff (echo/org/node/heart.py) or, without a heart, return the failure.
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

        async def run_console(keeper: ConsoleKeeper) -> None:
            try:
                with console_scope:
                    await keeper.run()
            finally:
                console_done.set()

        async with anyio.create_task_group() as tg:
            if self.console_keeper is not None:
                tg.start_soon(run_console, self.console_keeper)

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
