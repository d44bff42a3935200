"""`echoctl status`: what the organisation of a state directory is doing, honestly.

Three sources, from the closest to the farthest: the organisation's record
(`org.json`), each agent's heartbeat file, and the `agent_health` table. Each is
checked against the process it describes: a record or a row whose pid is dead on
this machine says nothing about the present, so an agent that crashed shows as
`crashed` (with its last error), never as the `healthy` its last heartbeat said.

The database named is the one the running organisation uses (recorded in
`org.json` at `up`, password redacted), not the caller's settings. `problems`
lists what makes the status a failure (the organisation stopped after a failure,
its database cannot be reached); the command exits 1 when there is any.
"""

from __future__ import annotations

import contextlib
import socket
import time
from datetime import UTC, datetime
from typing import Any

import anyio

from echo import db
from echo.config import Settings
from echo.errors import EchoError, StoreRejected
from echo.org.health import AgentHealth, read_health_file, row_to_health
from echo.org.roles import load_roles
from echo.org.state import AgentRecord, OrgRecord, pid_alive, read_org

#: Seconds after which a heartbeat is stale (the agent is `unresponsive`).
STALE_AFTER = 5.0


def _uptime(started: str | None) -> str:
    if not started:
        return "-"
    seconds = int((datetime.now(UTC) - datetime.fromisoformat(started)).total_seconds())
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def org_state(record: OrgRecord | None, alive: bool) -> str:
    """running/starting/stopping while the process lives; afterwards `stopped`,
    `failed` (it stopped after a failure) or `crashed` (it died without saying)."""
    if record is None:
        return "never started"
    if alive:
        return record.state
    if record.failure or record.state == "failed":
        return "failed"
    return "stopped" if record.state == "stopped" else "crashed"


def _dead_agent_state(rec: AgentRecord | None) -> str:
    if rec is None:
        return "not started"
    return "crashed" if rec.state in {"exited", "restarting", "failed"} else "down"


def _agent(role: str, rec: AgentRecord | None, health: AgentHealth | None, alive: bool) -> dict[str, Any]:
    if alive:
        state = health.state if health else "starting"
        reason = health.reason if health else None
    else:
        state = _dead_agent_state(rec)
        reason = rec.last_error if state == "crashed" and rec else None
    details = health.details if health and alive else {}
    return {
        "role": role,
        "pid": rec.pid if rec and alive else None,
        "state": state,
        "uptime": _uptime(rec.started_at) if rec and alive else "-",
        "restarts": rec.restarts if rec else 0,
        "last_heartbeat": health.last_heartbeat if health else None,
        "inbox_lag": details.get("inbox_lag"),
        "running_tasks": details.get("running_tasks"),
        "processed": details.get("processed"),
        "reason": reason,
        "last_error": rec.last_error if rec else None,
        "host": health.host if health else None,
    }


def _remote(h: AgentHealth) -> dict[str, Any]:
    return {
        "role": h.role,
        "pid": h.pid,
        "state": h.state,
        "host": h.host,
        "last_heartbeat": h.last_heartbeat,
        "reason": h.reason,
        "inbox_lag": h.details.get("inbox_lag"),
        "running_tasks": h.details.get("running_tasks"),
    }


def _is_stale_here(h: AgentHealth) -> bool:
    """A row written on this machine by a process that no longer exists."""
    return h.host == socket.gethostname() and not pid_alive(h.pid)


async def collect_status(s: Settings, *, remote: bool = True) -> dict[str, Any]:
    """Everything `status` shows, from the state directory and (if it answers) Postgres."""
    record = read_org(s)
    org_alive = bool(record and pid_alive(record.pid))
    agents: dict[str, dict[str, Any]] = {}
    for role in load_roles(s.agents_dir):
        rec = record.agents.get(role) if record else None
        alive = bool(org_alive and rec and rec.pid and pid_alive(rec.pid))
        agents[role] = _agent(role, rec, read_health_file(s, role, STALE_AFTER), alive)

    database = (record.database if record and record.database else None) or db.describe(s)
    reachable: bool | None = None
    error: str | None = None
    # Only ask Postgres when it should answer: a stopped embedded server is not started
    # just to say that nothing runs.
    embedded_idle = not s.database_url and db.embedded_server(s).running_pid() is None and not org_alive
    if remote and not embedded_idle:
        reachable, error = await _merge_database(s, agents)
    problems = []
    state = org_state(record, org_alive)
    if state in {"failed", "crashed"}:
        problems.append((record.failure if record else None) or "the organisation's process died")
    if reachable is False:
        problems.append(f"database {database} cannot be reached: {error}")
    return {
        "organisation": {
            "pid": record.pid if record and org_alive else None,
            "state": state,
            "failure": record.failure if record else None,
            "database": database,
            "database_reachable": reachable,
        },
        "agents": list(agents.values()),
        "problems": problems,
    }


async def _merge_database(s: Settings, agents: dict[str, dict[str, Any]]) -> tuple[bool, str | None]:
    """Add the agents that run elsewhere (other nodes) from `agent_health`; whether the
    database answered, and why not."""
    quick = s.model_copy(update={"connect_timeout": 1.5})
    try:
        with anyio.fail_after(3):
            async with db.connection(quick) as conn:
                rows = []
                # A refusal (an unmigrated namespace) is an answer: nothing runs elsewhere.
                with contextlib.suppress(StoreRejected), db.translate_errors(quick, "read agent health"):
                    rows = await conn.fetch("SELECT * FROM agent_health")
    except TimeoutError:
        return False, "no answer within 3 s"
    except EchoError as exc:
        return False, _reason(exc)
    for row in rows:
        h = row_to_health(row, STALE_AFTER)
        if agents.get(h.role, {}).get("pid") is None and h.state != "down" and not _is_stale_here(h):
            agents[h.role] = {**agents.get(h.role, {}), **_remote(h)}
    return True, None


def _reason(exc: BaseException) -> str:
    text = str(exc)
    start = text.find("unavailable (")
    if start >= 0:
        return text[start + len("unavailable ("):].split(");")[0]
    return text or type(exc).__name__


def wait_settled(s: Settings, roles: list[str], within: float = 15.0) -> list[str]:
    """After `up --detach`: wait until every agent's process reports itself healthy; after
    `within` s, `role: reason` for each agent that is not, so `up` does not say
    "organisation up" over agents that sit degraded (a passing degradation while an
    agent catches up is waited out)."""
    deadline = time.monotonic() + within
    while True:
        record = read_org(s)
        seen: dict[str, AgentHealth] = {}
        for role in roles:
            rec = record.agents.get(role) if record else None
            health = read_health_file(s, role, STALE_AFTER)
            if rec and rec.pid and health and health.pid == rec.pid:
                seen[role] = health
        settled = len(seen) == len(roles) and all(h.state == "healthy" for h in seen.values())
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    missing = [f"{role}: no heartbeat within {within:g} s" for role in roles if role not in seen]
    return [f"{role}: {h.reason or h.state}" for role, h in seen.items() if h.state != "healthy"] + missing
