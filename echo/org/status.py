"""The organisation's status: each agent's process, health and work, for `echoctl status`
and the console (through echo.org.client).

Two sources, because an organisation can span machines: the state directory of this
machine's organisation (its record `org.json` and each agent's heartbeat file) and,
when it answers, Postgres (`agent_health`: agents running elsewhere). An agent's state
is what its heartbeat says, `unresponsive` when the heartbeat is older than
`STALE_AFTER` seconds, `down` when its process is gone, `not started` before.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import anyio
from pydantic import BaseModel, Field

from echo import db
from echo.config import Settings
from echo.errors import EchoError
from echo.org.governance import governor_summary
from echo.org.health import read_health_file, row_to_health
from echo.org.leases import agent_processes
from echo.org.roles import role_names
from echo.org.state import live_agents, pid_alive, read_org

#: A heartbeat older than this (seconds) makes an agent `unresponsive`.
STALE_AFTER = 5.0
_HEALTH = db.load_queries("health")


class AgentStatus(BaseModel):
    """One agent as `status` shows it."""

    role: str
    pid: int | None = None
    state: str
    uptime: str = "-"
    restarts: int = 0
    last_heartbeat: str | None = None
    heartbeat_age: float | None = None
    inbox_lag: int | None = None
    running_tasks: int | None = None
    processed: int | None = None
    current_task: str | None = None
    reason: str | None = None
    last_error: str | None = None
    host: str | None = None
    claude: str | None = None  # `waiting: budget — ...`: why its Claude runs wait


class OrgInfo(BaseModel):
    pid: int | None
    state: str
    failure: str | None = None
    database: str
    node: str | None = None


class AgentProcessStatus(BaseModel):
    """One agent process of the organisation, on any node (echo/org/leases.py): the
    active one of its role or a standby."""

    role: str
    node: str
    host: str
    pid: int
    state: str  # healthy, degraded, starting (active); standby; unresponsive
    active: bool
    epoch: int | None = None
    heartbeat_age: float
    reason: str | None = None


class OrgStatus(BaseModel):
    """The organisation (from the state directory), each agent of this machine, and
    (when Postgres answers) every agent process of the organisation on every node."""

    organisation: OrgInfo
    agents: list[AgentStatus] = Field(default_factory=list)
    processes: list[AgentProcessStatus] | None = None
    #: The governor's pauses in force and why each role's runs wait (None: not known).
    governor: dict[str, Any] | None = None


class ClaudeMode(BaseModel):
    """Which Claude CLI runs the work and whether it has a login: the mode of a run.
    `missing` says what is lacking: `cli` (no binary) or `login` (no credentials)."""

    binary: str | None
    login: str | None
    mode: str  # claude or fallback
    reason: str | None
    missing: str | None = None


def claude_mode(settings: Settings) -> ClaudeMode:
    """Whether deciders and work will use the real Claude CLI, and if not, why."""
    from echo.work.claude import login_hint, resolve_claude_bin

    try:
        binary: str | None = resolve_claude_bin(settings)
        not_installed = None
    except EchoError as exc:
        binary, not_installed = None, str(exc)
    login = login_hint()
    if binary and login:
        return ClaudeMode(binary=binary, login=login, mode="claude", reason=None)
    if binary is None:
        return ClaudeMode(binary=None, login=login, mode="fallback", reason=not_installed,
                          missing="cli")
    return ClaudeMode(binary=binary, login=None, mode="fallback", missing="login",
                      reason="no ANTHROPIC_API_KEY and no `claude /login` credentials")


def _uptime(started: str | None) -> str:
    if not started:
        return "-"
    seconds = int((datetime.now(UTC) - datetime.fromisoformat(started)).total_seconds())
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def _age(beat: str | None) -> float | None:
    if not beat:
        return None
    return round((datetime.now(UTC) - datetime.fromisoformat(beat)).total_seconds(), 1)


async def collect_status(s: Settings, *, remote: bool = True) -> OrgStatus:
    """Each agent: role, pid, state, uptime, restarts, heartbeat age, inbox lag,
    running tasks, degraded reason. From the state directory (this machine's
    organisation) and, with `remote`, Postgres (agents on other machines)."""
    record = read_org(s)
    org_alive = bool(record and pid_alive(record.pid))
    orphans = live_agents(s, record) if not org_alive else []
    agents: dict[str, AgentStatus] = {}
    for role in role_names(s.agents_dir):
        rec = record.agents.get(role) if record else None
        health = read_health_file(s, role, STALE_AFTER)
        alive = bool(rec and rec.pid and pid_alive(rec.pid)) if org_alive else bool(
            rec and rec.pid in orphans)
        state = health.state if health and alive else ("down" if rec else "not started")
        if alive and health is None:
            state = "starting"
        details = health.details if health else {}
        agents[role] = AgentStatus(
            role=role, pid=rec.pid if rec and alive else None, state=state,
            uptime=_uptime(rec.started_at) if rec and alive else "-",
            restarts=rec.restarts if rec else 0,
            last_heartbeat=health.last_heartbeat if health else None,
            heartbeat_age=_age(health.last_heartbeat) if health else None,
            inbox_lag=details.get("inbox_lag"), running_tasks=details.get("running_tasks"),
            processed=details.get("processed"), current_task=details.get("current_task"),
            reason=health.reason if health else None,
            last_error=rec.last_error if rec else None, host=health.host if health else None)
    processes: list[AgentProcessStatus] | None = None
    if remote:
        with contextlib.suppress(EchoError):  # down, slow or unmigrated: what this machine knows
            processes = await _processes(s)
        with contextlib.suppress(EchoError):
            for h in await _remote_health(s):
                if agents.get(h.role) is None or (agents[h.role].pid is None and h.state != "down"):
                    base = agents.get(h.role) or AgentStatus(role=h.role, state=h.state)
                    agents[h.role] = base.model_copy(update={
                        "pid": h.pid, "state": h.state, "host": h.host,
                        "last_heartbeat": h.last_heartbeat, "heartbeat_age": _age(h.last_heartbeat),
                        "reason": h.reason, "inbox_lag": h.details.get("inbox_lag"),
                        "running_tasks": h.details.get("running_tasks")})
    if record is None:
        org_state = "never started"
    elif org_alive:
        org_state = record.state
    else:  # never "stopped" while agents of this state directory live on
        org_state = f"supervisor gone, {len(orphans)} agent(s) alive" if orphans else "stopped"
    governor = None
    if remote:
        with contextlib.suppress(EchoError, TimeoutError, OSError):
            governor = await governor_summary(s, list(agents))
        for role, why in (governor or {}).get("waiting", {}).items():
            if role in agents:
                agents[role] = agents[role].model_copy(update={"claude": f"waiting: {why}"})
    return OrgStatus(
        governor=governor,
        organisation=OrgInfo(
            pid=record.pid if record and org_alive else None, state=org_state,
            failure=record.failure if record else None, database=db.describe(s), node=s.node),
        agents=list(agents.values()), processes=processes)


async def _processes(settings: Settings) -> list[AgentProcessStatus] | None:
    quick = settings.model_copy(update={"connect_timeout": 1.5})
    with anyio.move_on_after(2):
        return [AgentProcessStatus(**p) for p in await agent_processes(quick, STALE_AFTER)]
    return None


async def _remote_health(settings: Settings) -> list[Any]:
    quick = settings.model_copy(update={"connect_timeout": 1.5})
    with anyio.move_on_after(2):
        async with db.connection(quick) as conn:
            rows = await conn.fetch(_HEALTH["all"])
        return [row_to_health(r, STALE_AFTER) for r in rows if r["state"] != "down"]
    return []
