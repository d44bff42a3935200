"""What an agent process does about the role while it is not the one acting as it.

A standby says once, in one line, why it stands by and who holds the role; it keeps
the state directory's health file saying `standby` (or `degraded` while it cannot
reach the database), unless that file belongs to the live active agent of the same
state directory. And every agent of `echoctl up` ends with its supervisor: the
kernel's death signal on Linux, and a watch on the parent's pipe everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from datetime import UTC, datetime

from echo.config import Settings
from echo.org.health import DEGRADED, AgentHealth, read_health_file, write_health_file
from echo.org.leases import STANDBY, Owner
from echo.org.node.state import pid_alive
from echo.org.roles import Role
from echo.runtime.deathsig import PARENT_FD_ENV, watch_parent

log = logging.getLogger(__name__)

_said: dict[str, tuple[object, ...]] = {}


def standby_line(role: str, owner: Owner | None, error: str | None) -> str:
    if error or owner is None:
        return (f"{role}: standing by: cannot tell who holds the role ({error or 'no lease yet'}); "
                "retrying")
    return (f"{role}: standing by because {role} is active on node {owner.node} (pid {owner.pid}); "
            "this agent takes over if that one dies")


def announce_standby(settings: Settings, role: Role, owner: Owner | None, error: str | None) -> None:
    """One line on stdout when what the standby knows changes; the health file."""
    key = (owner.node, owner.pid) if owner is not None and not error else ("?", bool(error))
    if _said.get(role.name) != key:
        _said[role.name] = key
        sys.stdout.write(standby_line(role.name, owner, error) + "\n")
        sys.stdout.flush()
        log.info("%s", standby_line(role.name, owner, error))
    current = read_health_file(settings, role.name, stale_after=settings.lease_seconds)
    if current is not None and current.pid != os.getpid() and current.state != "down" \
            and pid_alive(current.pid):
        return  # the live agent of this state directory writes its own file
    now = datetime.now(UTC).isoformat()
    with contextlib.suppress(OSError):
        write_health_file(settings, AgentHealth(
            role=role.name, state=DEGRADED if error else STANDBY, pid=os.getpid(),
            host=socket.gethostname(), reason=error, started_at=now, last_heartbeat=now,
            details={"node": settings.node, "active_node": owner.node if owner else None},
        ))


async def exit_with_parent() -> None:
    """If started by `echoctl up` (ECHO_PARENT_FD set), exit at once when it dies: the
    same end as the kernel's death signal, for platforms without it."""
    fd = os.environ.get(PARENT_FD_ENV)
    if not fd or not fd.isdigit():
        return
    try:
        os.set_blocking(int(fd), False)
    except OSError:
        return  # not ours (a stale variable): nothing to watch
    await watch_parent(int(fd))
    log.error("the supervisor (echoctl up) is gone; exiting")
    os._exit(1)
