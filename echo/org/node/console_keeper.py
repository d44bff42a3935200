"""The operator console beside the agents: a supervised OS process of its own.

The console (`python -m echo.console`) runs under a supervisor of its own, with a
restart backoff: it is restarted like any child, but its failures never count
against the agents' restart intensity, so a console that cannot start (its port is
taken) or crashes in a loop never takes the organisation down. It starts after the
agents and stops before them (echo/org/node/organisation.py). Its state, address and
last error are in the organisation's record, where `echoctl status` reads them.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from echo.config import Settings
from echo.org.node.children import AgentProcess, describe_exit, last_error_line
from echo.org.node.state import AgentRecord, OrgRecord, log_file, now_iso
from echo.runtime import Backoff, ChildSpec, Down, Process, Supervisor, is_normal, monitor

log = logging.getLogger(__name__)

#: The console's restarts: 1 s, 2 s, 4 s ... at most 30 s apart.
CONSOLE_BACKOFF = Backoff(initial=1.0, factor=2.0, max=30.0)


@dataclass(frozen=True)
class ConsoleOptions:
    """Where the organisation's console listens."""

    host: str = "127.0.0.1"
    port: int = 8765


@dataclass
class ConsoleKeeper:
    """Keeps the console up beside the agents, in the organisation's record."""

    settings: Settings
    console: ConsoleOptions
    record: OrgRecord
    env: dict[str, str]
    start_timeout: float
    save: Callable[[], None]
    on_event: Callable[[str, AgentRecord], None]

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

    async def run(self) -> None:
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
