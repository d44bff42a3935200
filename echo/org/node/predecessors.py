"""How the node starts an agent process, told which dead process it replaces.

A restarted agent may take over its role's lease at once only when the lease names a
process that is dead (echo/org/leases.py `Predecessor`): the one this supervisor
reaped, or one a killed `up` of the same state directory left behind. The node
passes it on the agent's command line (echo/org/__main__.py `--predecessor`).
"""

from __future__ import annotations

import sys

from echo.config import Settings
from echo.org.health import read_health_file
from echo.org.leases import PREDECESSOR_FLAG, Predecessor
from echo.org.node.state import READY_FLAG, pid_alive, read_org
from echo.runtime import OSProcess


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
