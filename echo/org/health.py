"""HealthMonitor: an agent's heartbeat, its own state, and the organisation's view.

An agent is `healthy` when everything it depends on answers, `degraded` when it
runs but something it needs (Postgres, Redis) does not, `unresponsive` when its
heartbeat is stale, and `down` when it stopped cleanly. Readers derive
`unresponsive`; agents report the rest.

The monitor must never be what takes an agent down, so every query is guarded
and the in-memory state is always served. A circuit breaker stops it from
hammering a dead database: after a few failures it waits before trying again.
Each beat the database did not take, or that changed what the agent says, is also
written to a file in the state directory, so `echoctl status` on the same machine works
while the database is away; otherwise the file is touched every `FILE_EVERY` (2)
seconds, and its readers take its modification time as the heartbeat.

An agent that holds its role's lease renews it every second, and that statement also
refreshes the heartbeat of the agent's row (leases.sql `renew_beat`, only while the row
is this process's and not `down`). So while nothing the agent says changes and the
renewal carried its row lately (`carrier`), a beat writes nothing to the database: an
idle owner makes one statement a second, not two. Any change is written at once, and
the monitor writes its own beat whenever no renewal carried the row within two beats.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from echo import db
from echo.config import Settings
from echo.errors import StoreRejected, StoreUnavailable
from echo.paths import private_dir
from echo.runtime.ticks import until_tick

log = logging.getLogger(__name__)

HEALTHY, DEGRADED, UNRESPONSIVE, DOWN = "healthy", "degraded", "unresponsive", "down"


class CircuitBreaker:
    """Closed: calls go through. Open: calls are refused until `reset_timeout` passes.
    Half-open: one trial call decides between the two."""

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at >= self.reset_timeout:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        return self.state != "open"

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.failure_threshold or self.opened_at is not None:
            self.opened_at = self.clock()


@dataclass
class AgentHealth:
    """One agent as a reader sees it."""

    role: str
    state: str
    pid: int | None = None
    host: str | None = None
    reason: str | None = None
    started_at: str | None = None
    last_heartbeat: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def classify(reported: str, last_heartbeat: datetime | None, stale_after: float,
             now: datetime | None = None) -> str:
    """The state a reader should believe at `now` (the wall clock by default): a stale
    heartbeat means unresponsive."""
    if reported == DOWN:
        return DOWN
    if last_heartbeat is None:
        return UNRESPONSIVE
    age = ((now or datetime.now(UTC)) - last_heartbeat).total_seconds()
    return UNRESPONSIVE if age > stale_after else reported


def health_file(settings: Settings, role: str) -> Path:
    return settings.state_dir / "agents" / f"{role}.json"


def read_health_file(settings: Settings, role: str, stale_after: float) -> AgentHealth | None:
    """What an agent on this machine last wrote about itself, as of its last beat: the
    file's time, since a beat that changed nothing only touches it."""
    try:
        with health_file(settings, role).open() as f:
            touched = datetime.fromtimestamp(os.fstat(f.fileno()).st_mtime, UTC)
            data = json.load(f)
    except (OSError, ValueError):
        return None
    said = datetime.fromisoformat(data["last_heartbeat"]) if data.get("last_heartbeat") else None
    beat = max(said, touched) if said is not None else None
    data["last_heartbeat"] = beat.isoformat() if beat is not None else None
    data["state"] = classify(data.get("state", UNRESPONSIVE), beat, stale_after)
    return AgentHealth(**{k: data.get(k) for k in AgentHealth.__dataclass_fields__ if k in data})


def write_health_file(settings: Settings, health: AgentHealth) -> int:
    """Replace the role's health file atomically (mode 0600); returns the new file's
    inode, by which `touch_health_file` knows it is still the one written."""
    path = health_file(settings, health.role)
    private_dir(path.parent)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(health.__dict__, default=str))
    tmp.chmod(0o600)
    inode = tmp.stat().st_ino
    tmp.replace(path)
    return inode


def touch_health_file(settings: Settings, role: str, inode: int) -> bool:
    """A beat that changed nothing: the file's time moves, its words stay. False (and
    nothing touched) when the file is not the one this writer wrote (`inode`): another
    process of the role replaced it (a standby says so in the same file), so the caller
    writes its own again rather than make another's words look fresh."""
    path = health_file(settings, role)
    if os.stat(path).st_ino != inode:
        return False
    os.utime(path)
    return True


_Q = db.load_queries("health")

#: While the database takes the beats and nothing changes, the health file is touched
#: once this many seconds have passed since it was last written or touched (its readers
#: allow 5 s; counted in time, not beats, so a slow database's long beats cannot stretch
#: it).
FILE_EVERY = 2.0

#: A renewal carried the heartbeat lately enough when it was sent within this many beat
#: intervals: the row's heartbeat is then never older than two beats (readers allow five).
CARRIED_WITHIN = 2.0


class HealthMonitor:
    """Heartbeats for one agent, and the organisation's health as last seen."""

    def __init__(
        self,
        settings: Settings,
        database: db.Database,
        role: str,
        *,
        interval: float = 1.0,
        stale_after: float | None = None,
        stats: Callable[[], dict[str, Any]] | None = None,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
        carrier: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock  # when the file was last written (FILE_EVERY), on `carrier`'s clock
        #: When (`clock`) the role's lease renewal last refreshed this agent's row's
        #: heartbeat (LeaseKeeper.heartbeat_at); None: every beat goes to the database.
        self.carrier = carrier
        self.db = database
        self.role = role
        self.interval = interval
        self.stale_after = stale_after or interval * 5
        self.stats = stats or dict
        self.breaker = breaker or CircuitBreaker(reset_timeout=max(interval * 3, 1.0))
        self.started_at = datetime.now(UTC)
        self.host = socket.gethostname()
        self._problems: dict[str, str] = {}
        self._org: dict[str, AgentHealth] = {}
        self.beats = 0
        self.writes = 0  # beats this monitor wrote to the database itself
        self._stored: tuple[str, str | None, dict[str, Any]] | None = None  # as last written there
        self._filed: tuple[str, str | None, dict[str, Any]] | None = None  # as last written
        self._filed_at = float("-inf")  # when (monotonic) it was written or touched
        self._inode: int | None = None  # the file it wrote (touch_health_file)
        self.became_healthy = anyio.Event()

    # What the agent's components say.

    def problem(self, component: str, reason: str) -> None:
        """`component` is not working (e.g. "database", "work"); the agent is degraded.
        Components call this through their `echo.degradation.Condition`: the monitor is
        the one place an agent's degradation is gathered."""
        self._problems[component] = reason

    def resolved(self, component: str) -> None:
        self._problems.pop(component, None)

    @property
    def state(self) -> str:
        return DEGRADED if self._problems else HEALTHY

    @property
    def reason(self) -> str | None:
        return "; ".join(f"{k}: {v}" for k, v in sorted(self._problems.items())) or None

    def own(self) -> AgentHealth:
        details = self._safe_stats()  # figures only: components push their problems
        return AgentHealth(
            role=self.role,
            state=self.state,
            pid=os.getpid(),
            host=self.host,
            reason=self.reason,
            started_at=self.started_at.isoformat(),
            last_heartbeat=datetime.now(UTC).isoformat(),
            details=details,
        )

    def _safe_stats(self) -> dict[str, Any]:
        try:
            return dict(self.stats())
        except Exception:  # a broken stats callback must not stop the heartbeat
            log.exception("stats callback failed")
            return {}

    # Writing.

    def _write_file(self, health: AgentHealth) -> None:
        self._inode = write_health_file(self.settings, health)

    def _touch_file(self) -> bool:
        """True if the file this monitor wrote was touched."""
        try:
            return self._inode is not None and touch_health_file(self.settings, self.role,
                                                                 self._inode)
        except OSError:
            return False

    def _carried(self, said: tuple[str, str | None, dict[str, Any]]) -> bool:
        """The database row already says `said`, and a renewal refreshed its heartbeat
        within CARRIED_WITHIN beats: this beat need not be written there."""
        if self.carrier is None or said != self._stored:
            return False
        return self.clock() - self.carrier() <= CARRIED_WITHIN * self.interval

    async def beat(self, state: str | None = None) -> None:
        """One heartbeat: the database when the breaker allows (unless the lease renewal
        carried it, see the module's docstring); the file when the database did not take
        it or when what it says changed, and otherwise a touch every `FILE_EVERY` s (its
        readers call it stale after 5 s; a rewrite costs an idle agent more than a
        statement)."""
        health = self.own()
        if state:
            health.state = state
        said = (health.state, health.reason, health.details)
        stored = self._carried(said)
        tried = not stored and self.breaker.allow()
        if tried:
            self._stored = None  # until this write is known to have landed (a cancel)
            try:
                with anyio.fail_after(self.settings.command_timeout):
                    async with self.db.acquire() as conn:
                        await conn.execute(
                            _Q["beat"],
                            self.role,
                            self.host,
                            os.getpid(),
                            health.state,
                            health.reason,
                            self.started_at,
                            health.details,
                        )
                self._stored = said
                self.writes += 1
                self.breaker.success()
                self.resolved("database")
                stored = True
            except (StoreUnavailable, StoreRejected, TimeoutError) as exc:
                self.breaker.failure()
                self.problem("database", _short(exc))
        if tried:  # what it says may have changed: the database problem came or went
            health = self.own()
            if state:
                health.state = state
            said = (health.state, health.reason, health.details)
        now = self.clock()
        rewrite = not stored or said != self._filed
        if not rewrite and now - self._filed_at >= FILE_EVERY:
            # Written whole instead when it was replaced by another process of the role
            # (a standby writes the same file) or is gone.
            rewrite = not self._touch_file()
            if not rewrite:
                self._filed_at = now
        if rewrite:
            with contextlib.suppress(OSError):
                self._write_file(health)
                self._filed, self._filed_at = said, now
        self.beats += 1
        if self.state == HEALTHY:
            self.became_healthy.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Beat every `interval` until cancelled; on a clean stop, say `down`."""
        await self.beat()
        task_status.started()
        try:
            while True:
                await anyio.sleep(until_tick(self.interval))  # with the other timers
                await self.beat()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self.beat(DOWN)

    # Reading.

    async def snapshot(self) -> dict[str, AgentHealth]:
        """Every agent's health: fresh from the database if it answers, else as last seen."""
        if self.breaker.allow():
            try:
                with anyio.fail_after(self.settings.command_timeout):
                    async with self.db.acquire() as conn:
                        rows = await conn.fetch(_Q["all"])
                self.breaker.success()
                self._org = {r["role"]: row_to_health(r, self.stale_after) for r in rows}
            except (StoreUnavailable, StoreRejected, TimeoutError) as exc:
                self.breaker.failure()
                self.problem("database", _short(exc))
        self._org[self.role] = self.own()
        return dict(self._org)


def row_to_health(row: db.Record, stale_after: float) -> AgentHealth:
    return AgentHealth(
        role=row["role"],
        state=classify(row["state"], row["last_heartbeat"], stale_after),
        pid=row["pid"],
        host=row["host"],
        reason=row["reason"],
        started_at=row["started_at"].isoformat(),
        last_heartbeat=row["last_heartbeat"].isoformat(),
        details=row["details"],
    )


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
