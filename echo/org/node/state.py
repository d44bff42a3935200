"""What the running organisation writes to the state directory for other terminals.

`echoctl up` is one long-lived process; `status`, `logs`, `restart` and `down` run
in other terminals. They find it through files in the state directory, which is
private to the user (0700): the org's own record (`org.json`, rewritten
atomically on every change), its control socket (`org.sock`), one log file per
agent (`logs/<role>.log`) and each agent's heartbeat file (`agents/<role>.json`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from echo.config import Settings
from echo.paths import private_dir
from echo.slices import DatabaseSettings

#: What an agent prints on stdout once its supervision tree is up, when started with
#: READY_FLAG (a staggered start waits for it). The organisation keeps it out of the
#: log, and an agent run by hand (`./cto --autonomous`) never prints it.
READY_LINE = "ECHO-READY"
READY_FLAG = "--announce-ready"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class AgentRecord:
    """One agent process as its supervisor sees it."""

    role: str
    state: str = "pending"  # pending, starting, running, restarting, stopped, failed
    pid: int | None = None
    started_at: str | None = None
    restarts: int = 0
    last_exit: str | None = None
    last_error: str | None = None


@dataclass
class OrgRecord:
    pid: int
    namespace: str
    started_at: str = field(default_factory=now_iso)
    state: str = "starting"  # starting, running, restarting (the heart), stopping, stopped, failed
    failure: str | None = None
    #: The database the organisation runs on, as safe to print (password redacted).
    database: str | None = None
    agents: dict[str, AgentRecord] = field(default_factory=dict)
    console: AgentRecord | None = None  # the operator console process, when it runs
    console_url: str | None = None
    #: How often the node's heart restarted it (echo/org/node/heart.py), and the last line why.
    node_restarts: int = 0
    last_node_restart: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OrgRecord:
        agents = {k: AgentRecord(**v) for k, v in data.pop("agents", {}).items()}
        console = data.pop("console", None)
        known = set(cls.__dataclass_fields__)
        return cls(
            agents=agents,
            console=AgentRecord(**console) if console else None,
            **{k: v for k, v in data.items() if k in known},
        )


def org_file(settings: Settings | DatabaseSettings) -> Path:
    """The record of the organisation of this state directory (the database's slice
    has the state directory too: the embedded servers a command started are told by it)."""
    return settings.state_dir / "org.json"


def control_socket(settings: Settings) -> Path:
    return settings.state_dir / "org.sock"


def log_file(settings: Settings, role: str) -> Path:
    return settings.log_dir / f"{role}.log"


def write_org(settings: Settings, record: OrgRecord) -> None:
    path = org_file(settings)
    private_dir(path.parent)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)


def read_org(settings: Settings | DatabaseSettings) -> OrgRecord | None:
    try:
        return OrgRecord.from_json(json.loads(org_file(settings).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def mark_stopped(settings: Settings) -> None:
    """Record that the organisation is stopped: after `down` stopped the agents its dead
    supervisor left behind, status says `stopped`, not `crashed`."""
    record = read_org(settings)
    if record is not None and record.state != "stopped":
        record.state = "stopped"
        for agent in record.agents.values():
            agent.state = "stopped"
        write_org(settings, record)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


#: How much later than the record a process may seem to have started and still be the
#: one that wrote it: a process's start time is known to the second (the boot time is).
_START_SLACK_S = 1.0


def started_by(pid: int, recorded_at: str) -> bool:
    """Whether process `pid` was already running when the record stamped `recorded_at`
    was written. The kernel hands a freed pid to a later process (pids wrap at 32768 on
    a busy machine within minutes): a process that started after the record is a
    stranger, perhaps someone's Postgres, which `down` must never signal."""
    import psutil

    try:
        created = psutil.Process(pid).create_time()
        recorded = datetime.fromisoformat(recorded_at).timestamp()
    except (psutil.Error, ValueError, TypeError):
        return True  # cannot tell: the liveness check alone decides, as before
    return created <= recorded + _START_SLACK_S


def running_org(settings: Settings | DatabaseSettings) -> OrgRecord | None:
    """The organisation running from this state directory, if its process is alive and
    is the process that wrote the record (not a later one that got its pid)."""
    record = read_org(settings)
    if (record and record.state in {"starting", "running", "stopping"} and pid_alive(record.pid)
            and started_by(record.pid, record.started_at)):
        return record
    return None


def _is_agent(pid: int) -> bool:
    """Whether `pid` is an agent process (`python -m echo.org ROLE`), not a stranger
    that reused a recorded pid. Where /proc is missing, a live pid is taken as one."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"echo.org" in fh.read()
    except FileNotFoundError:
        return os.path.isdir("/proc") is False
    except OSError:
        return True


def live_agents(settings: Settings, record: OrgRecord | None) -> list[int]:
    """The pids of this state directory's agents that are still alive, whether or not
    their supervisor is."""
    if record is None:
        return []
    return [a.pid for a in record.agents.values()
            if a.pid and pid_alive(a.pid) and _is_agent(a.pid)
            and (a.started_at is None or started_by(a.pid, a.started_at))]
