"""The organisation's status: each agent's process, health and work, for `echoctl status`
and the console (through echo.org.client), honestly.

Sources, from the closest to the farthest: the state directory of this machine's
organisation (its record `org.json` and each agent's heartbeat file) and, when it
answers, Postgres (`agent_health`: agents running elsewhere; the role leases: every
agent process on every node). Each is checked against the process it describes: a
record or a row whose pid is dead on this machine says nothing about the present, so
an agent that crashed shows as `crashed` (with its last error), never as the
`healthy` its last heartbeat said. An agent's state is otherwise what its heartbeat
says, `unresponsive` when the heartbeat is older than `STALE_AFTER` seconds, `down`
when its process stopped, `not started` before.

The database named is the one the running organisation uses (recorded in `org.json`
at `up`, password redacted), not the caller's settings. `problems` lists what makes
the status a failure (the organisation stopped after a failure or died, its database
cannot be reached); `echoctl status` exits 1 when there is any.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio
from pydantic import BaseModel, Field

from echo import db
from echo.config import Settings
from echo.errors import EchoError, StoreRejected
from echo.org.governance import governor_summary
from echo.org.health import AgentHealth, read_health_file, row_to_health
from echo.org.leases import STALE, STANDBY, agent_processes
from echo.org.node.state import AgentRecord, OrgRecord, live_agents, pid_alive, read_org
from echo.org.roles import role_names

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
    #: Seconds since its role's lease was last renewed, when it is the owner (database).
    renewed_age: float | None = None


class OrgInfo(BaseModel):
    pid: int | None
    state: str
    failure: str | None = None
    database: str
    #: Whether that database answered (None: not asked, e.g. a stopped embedded server).
    database_reachable: bool | None = None
    node: str | None = None
    #: How often its heart restarted the node after an agent gave up, and the last why.
    node_restarts: int = 0
    last_node_restart: str | None = None


class AgentProcessStatus(BaseModel):
    """One agent process of the organisation, on any node (echo/org/leases.py): the
    active one of its role or a standby."""

    role: str
    node: str
    host: str
    pid: int
    state: str  # healthy, degraded, starting, stale (active); standby; unresponsive; down
    active: bool
    epoch: int | None = None
    heartbeat_age: float
    #: The owner's seconds since its last renewal the database confirmed (None: standby).
    renewed_age: float | None = None
    reason: str | None = None


class OrgStatus(BaseModel):
    """The organisation (from the state directory), each agent of this machine, and
    (when Postgres answers) every agent process of the organisation on every node."""

    organisation: OrgInfo
    agents: list[AgentStatus] = Field(default_factory=list)
    processes: list[AgentProcessStatus] | None = None
    #: The governor's pauses in force and why each role's runs wait (None: not known).
    governor: dict[str, Any] | None = None
    #: What makes this status a failure (`echoctl status` exits 1 when there is any).
    problems: list[str] = Field(default_factory=list)


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
    from echo.work.claude_cli import login_hint, resolve_claude_bin

    try:
        binary: str | None = resolve_claude_bin(settings.claude)
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


def org_state(record: OrgRecord | None, alive: bool, orphans: list[int] | None = None) -> str:
    """running/starting/stopping while the process lives; afterwards `supervisor gone`
    while agents of this state directory live on, `stopped`, `failed` (it stopped after
    a failure) or `crashed` (it died without saying)."""
    if record is None:
        return "never started"
    if alive:
        return record.state
    if orphans:
        return f"supervisor gone, {len(orphans)} agent(s) alive"
    if record.failure or record.state == "failed":
        return "failed"
    return "stopped" if record.state == "stopped" else "crashed"


def _dead_agent_state(rec: AgentRecord | None) -> str:
    if rec is None:
        return "not started"
    return "crashed" if rec.state in {"exited", "restarting", "failed"} else "down"


def _agent(role: str, rec: AgentRecord | None, health: AgentHealth | None, alive: bool) -> AgentStatus:
    if alive:
        state = health.state if health else "starting"
        reason = health.reason if health else None
    else:
        state = _dead_agent_state(rec)
        reason = rec.last_error if state == "crashed" and rec else None
    details = health.details if health and alive else {}
    return AgentStatus(
        role=role, pid=rec.pid if rec and alive else None, state=state,
        uptime=_uptime(rec.started_at) if rec and alive else "-",
        restarts=rec.restarts if rec else 0,
        last_heartbeat=health.last_heartbeat if health else None,
        heartbeat_age=_age(health.last_heartbeat) if health else None,
        inbox_lag=details.get("inbox_lag"), running_tasks=details.get("running_tasks"),
        processed=details.get("processed"), current_task=details.get("current_task"),
        reason=reason, last_error=rec.last_error if rec else None,
        host=health.host if health else None)


def _is_stale_here(h: AgentHealth) -> bool:
    """A row written on this machine by a process that no longer exists."""
    return h.host == socket.gethostname() and not pid_alive(h.pid)


async def collect_status(s: Settings, *, remote: bool = True) -> OrgStatus:
    """Each agent: role, pid, state, uptime, restarts, heartbeat age, inbox lag,
    running tasks, degraded reason. From the state directory (this machine's
    organisation) and, with `remote`, Postgres (agents and processes on other machines)."""
    record = read_org(s)
    org_alive = bool(record and pid_alive(record.pid))
    orphans = live_agents(s, record) if not org_alive else []
    agents: dict[str, AgentStatus] = {}
    for role in role_names(s.agents_dir):
        rec = record.agents.get(role) if record else None
        alive = bool(rec and rec.pid and pid_alive(rec.pid)) if org_alive else bool(
            rec and rec.pid in orphans)
        agents[role] = _agent(role, rec, read_health_file(s, role, STALE_AFTER), alive)

    database = (record.database if record and record.database else None) or db.describe(s.database)
    reachable: bool | None = None
    error: str | None = None
    processes: list[AgentProcessStatus] | None = None
    # Only ask Postgres when it should answer: a stopped embedded server is not started
    # just to say that nothing runs.
    embedded_idle = (not s.database_url and db.embedded_server(s.database).running_pid() is None
                     and not org_alive and not orphans)
    if remote and not embedded_idle:
        reachable, error = await _merge_database(s, agents)
        if reachable:
            with contextlib.suppress(EchoError):  # slow or unmigrated: what this machine knows
                processes = await _processes(s)
            mark_stale_owners(s, agents, processes or [])
    state = org_state(record, org_alive, orphans)
    problems = []
    if state in {"failed", "crashed"}:
        problems.append((record.failure if record else None) or "the organisation's process died")
    elif state == "restarting" and record and record.failure:  # the heart restarts it
        problems.append(record.failure)
    if reachable is False:
        problems.append(f"database {database} cannot be reached: {error}")
    governor = None
    if remote and reachable:
        with contextlib.suppress(EchoError, TimeoutError, OSError):
            governor = await governor_summary(s, list(agents))
        for role, why in (governor or {}).get("waiting", {}).items():
            if role in agents:
                agents[role] = agents[role].model_copy(update={"claude": f"waiting: {why}"})
    return OrgStatus(
        governor=governor,
        organisation=OrgInfo(
            pid=record.pid if record and org_alive else None, state=state,
            failure=record.failure if record else None, database=database,
            database_reachable=reachable, node=s.node,
            node_restarts=record.node_restarts if record else 0,
            last_node_restart=record.last_node_restart if record else None),
        agents=list(agents.values()), processes=processes, problems=problems)


async def _processes(settings: Settings) -> list[AgentProcessStatus] | None:
    quick = settings.database.model_copy(update={"connect_timeout": 1.5})
    with anyio.move_on_after(2):
        rows = [AgentProcessStatus(**p)
                for p in await agent_processes(quick, settings.leases, STALE_AFTER)]
        return mark_gone(rows, socket.gethostname(), pid_alive)
    return None


def mark_stale_owners(s: Settings, agents: dict[str, AgentStatus],
                      processes: list[AgentProcessStatus]) -> None:
    """Each agent of this node that owns its role: the age of its last lease renewal,
    and `stale` (with why) once it missed renewals: a paused or partitioned owner must
    not read `healthy`, and `stale` (rather than `unresponsive`) says that its lease
    still stands, so no standby takes over until it runs out."""
    for p in processes:
        known = agents.get(p.role)
        if not p.active or known is None or known.pid != p.pid or p.node != s.node:
            continue
        update: dict[str, Any] = {"renewed_age": p.renewed_age}
        if p.state == STALE and known.state in ("healthy", "degraded", "starting", "unresponsive"):
            update |= {"state": STALE, "reason": (
                f"no lease renewal confirmed for {p.renewed_age or 0:.1f} s (renewals every "
                f"{s.lease_renew_interval:g} s); its lease still stands, so no one else takes over yet")}
        agents[p.role] = known.model_copy(update=update)


def mark_gone(
    rows: list[AgentProcessStatus], here: str, alive: Callable[[int], bool]
) -> list[AgentProcessStatus]:
    """A process of this host whose pid is gone is `down`, not `unresponsive`: after a
    SIGKILL and a restart, the dead agent's heartbeat row lingers beside its successor's
    until it ages out. Processes of other hosts cannot be checked from here."""
    return [r.model_copy(update={"state": "down"}) if r.host == here and not alive(r.pid) else r
            for r in rows]


async def _merge_database(s: Settings, agents: dict[str, AgentStatus]) -> tuple[bool, str | None]:
    """Add the agents that run elsewhere (other nodes) from `agent_health`; whether the
    database answered, and why not."""
    quick = s.database.model_copy(update={"connect_timeout": 1.5})
    try:
        with anyio.fail_after(3):
            async with db.connection(quick) as conn:
                rows = []
                # A refusal (an unmigrated namespace) is an answer: nothing runs elsewhere.
                with contextlib.suppress(StoreRejected), db.translate_errors(quick, "read agent health"):
                    rows = await conn.fetch(_HEALTH["all"])
    except TimeoutError:
        return False, "no answer within 3 s"
    except EchoError as exc:
        return False, _reason(exc)
    for row in rows:
        h = row_to_health(row, STALE_AFTER)
        known = agents.get(h.role)
        if (known is None or known.pid is None) and h.state != "down" and not _is_stale_here(h):
            base = known or AgentStatus(role=h.role, state=h.state)
            agents[h.role] = base.model_copy(update={
                "pid": h.pid, "state": h.state, "host": h.host,
                "last_heartbeat": h.last_heartbeat, "heartbeat_age": _age(h.last_heartbeat),
                "reason": h.reason, "inbox_lag": h.details.get("inbox_lag"),
                "running_tasks": h.details.get("running_tasks")})
    return True, None


def _reason(exc: BaseException) -> str:
    text = str(exc)
    start = text.find("unavailable (")
    if start >= 0:
        return text[start + len("unavailable ("):].split(");")[0]
    return text or type(exc).__name__


#: The states in which an agent started by `up` has settled.
_SETTLED = {"healthy", STANDBY}


def wait_settled(s: Settings, roles: list[str], within: float = 15.0) -> list[str]:
    """After `up --detach`: wait until every agent's process reports itself healthy; after
    `within` s, `role: reason` for each agent that is not, so `up` does not say
    "organisation up" over agents that sit degraded (a passing degradation while an
    agent catches up is waited out). A standby (another node holds the role) is settled."""
    deadline = time.monotonic() + within
    while True:
        record = read_org(s)
        seen: dict[str, AgentHealth] = {}
        for role in roles:
            rec = record.agents.get(role) if record else None
            health = read_health_file(s, role, STALE_AFTER)
            if rec and rec.pid and health and health.pid == rec.pid:
                seen[role] = health
        settled = len(seen) == len(roles) and all(h.state in _SETTLED for h in seen.values())
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    missing = [f"{role}: no heartbeat within {within:g} s" for role in roles if role not in seen]
    return [f"{role}: {h.reason or h.state}" for role, h in seen.items() if h.state not in _SETTLED] + missing

