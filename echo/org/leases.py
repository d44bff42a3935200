"""Role leases: one active agent process per role, standbys elsewhere, fencing by epoch.

OTP runs a distributed application on exactly one node and moves it when that node
dies; ECHO does the same per role with Postgres as the arbiter. Each agent process
has a `LeaseKeeper`. It holds the role's lease row (shared/sql/009_role_leases.sql)
or waits for it as a **standby**:

- **Acquire**: a standby takes the role when no one holds it or the lease expired,
  by the database's clock (`now()`), never a node's. Each takeover increments the
  lease's `epoch`.
- **Restart** (a `Predecessor`): an agent its supervisor restarted after reaping the
  previous process is told that process's pid (and epoch, when known) and takes the
  role at once if the lease still names exactly that holder on this node: a
  compare-and-set in the acquire statement. The supervisor saw that pid die, so only
  a dead process held the lease; waiting out its expiry would leave the role without
  an owner for `lease_seconds`. The epoch still increments, so the dead process's
  late writes (a connection's buffered statement) stay fenced, and a lease that any
  other process took meanwhile is never touched.
- **Renew**: the owner renews every `lease_renew_interval` (1 s); a renewal extends
  the lease to `now() + lease_seconds` (5 s) in the database, and refreshes the
  process's row of the organisation's view in the same statement (`renew_beat`).
- **The owner's rule**: it acts only while `monotonic() < t + lease_seconds`, where
  `t` is the moment, on its own monotonic clock, it *sent* the last renewal the
  database confirmed. The database set the expiry at a time no earlier than `t`,
  so the owner stops acting no later than the database lets anyone else start
  (clock *rate* drift aside; a clock's *offset* does not matter). With the database
  down, that is at most `lease_seconds` after the last good renewal.
- **The deadline** holds for everything the role does, side effects outside Postgres
  included: `stop_margin` (echo/work/process.py) before `t + lease_seconds` the keeper
  *halts* the tree (`halted` is set; the tree is cancelled at once, not stopped in
  order, and its running child process groups are killed), so nothing of it runs
  when the lease can pass on. An owner that learns it lost the lease (a renewal that
  matches no row, or `lost()`: the fence refused a write) halts at once too. An
  ordered stop (`down`, a hand-over) keeps renewing while the tree winds down, and
  turns into a halt should the renewals stop being confirmed.
- **Fencing**: the role's tree writes through connections opened with the startup
  setting `echo.fence = role/epoch/holder`; a statement trigger refuses every write
  as the role once that epoch is no longer the role's unexpired lease (`LeaseLost`).
  So an owner that was paused (SIGSTOP, a long GC, a partition) writes nothing after
  the new owner took over, even before it notices.
- **Release**: a clean stop (`down`, SIGTERM) releases the lease at once, so a
  standby elsewhere takes over at its next poll rather than at expiry.
- **Hand-over** (`--prefer ROLE`): a standby on a node that prefers the role asks
  for it after `lease_takeover_grace`; the owner (if its node does not prefer it
  too) stops its tree and passes the lease to the asker in one statement, so the
  role always has a holder.

A standby polls at most every `lease_renew_interval`, and sleeps only until the
current lease would expire, so a takeover after a SIGKILL comes about
`lease_seconds` after the last renewal plus the tree's start.

This module holds what a lease is (`Lease`, its fence; `Owner`; `Predecessor`) and the
organisation's view of the lease rows; `LeaseKeeper` (echo/org/agent/lease_keeper.py)
carries out the rules above.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from echo import db
from echo.bus.channels import ROLE_RE
from echo.slices import DatabaseSettings, LeaseSettings

_Q = db.load_queries("leases")

#: A lease holder (`LeaseKeeper` names itself with a random uuid's hex): no slash, the
#: fence's separator, nor space or control character.
_HOLDER_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")

STANDBY, ACTIVE, STALE = "standby", "active", "stale"

#: The agent's command-line option that names its dead predecessor (`Predecessor`).
PREDECESSOR_FLAG = "--predecessor"


@dataclass(frozen=True)
class Predecessor:
    """The agent process of this node that this one replaces, as its supervisor knows
    it after reaping it: its pid, and the epoch it held (None when it died before
    saying). Passed on the agent's command line as `PREDECESSOR_FLAG PID[:EPOCH]`."""

    pid: int
    epoch: int | None = None

    def arg(self) -> str:
        return f"{self.pid}" if self.epoch is None else f"{self.pid}:{self.epoch}"

    @classmethod
    def parse(cls, text: str) -> Predecessor:
        """`PID` or `PID:EPOCH`; ValueError otherwise."""
        pid, _, epoch = text.partition(":")
        made = cls(int(pid), int(epoch) if epoch else None)
        if made.pid <= 0 or (made.epoch is not None and made.epoch <= 0):
            raise ValueError(f"not a pid[:epoch]: {text!r}")
        return made


@dataclass(frozen=True)
class Lease:
    """The role held at `epoch` by the agent process `holder`."""

    role: str
    holder: str
    epoch: int

    @property
    def fence(self) -> str:
        """The `echo.fence` startup setting of the connections that act as the role."""
        return f"{self.role}/{self.epoch}/{self.holder}"

    @classmethod
    def parse(cls, fence: str) -> Lease:
        """The lease a `fence` string ('role/epoch/holder') names; ValueError if it is
        not one (what a process given a fence on its command line checks first)."""
        role, epoch, holder = ([*fence.split("/"), "", ""])[:3]
        if (fence.count("/") != 2 or not ROLE_RE.match(role) or not epoch.isdigit()
                or int(epoch) < 1 or not _HOLDER_RE.match(holder)):
            raise ValueError(f"{fence[:80]!r} is not a fence: ROLE/EPOCH/HOLDER, e.g. "
                             "cto/3/0f1e..., the lease an agent holds")
        return cls(role, holder, int(epoch))


@dataclass(frozen=True)
class Owner:
    """Who holds a role, as a standby sees it."""

    holder: str | None
    node: str
    pid: int
    epoch: int
    held: bool
    expires_in: float
    wanted_by: str | None = None


# -- the organisation's view ------------------------------------------------------------


#: An owner whose last confirmed renewal is older than this many renewal intervals is
#: `stale`: paused, partitioned or stuck, though its lease has not run out yet.
STALE_RENEWALS = 2


def owner_state(active: bool, health_state: str | None, heartbeat_age: float,
                renewed_age: float | None, *, stale_after: float, renew_interval: float) -> str:
    """An agent process's state in the organisation's view (see `agent_processes`)."""
    if active and renewed_age is not None and renewed_age > STALE_RENEWALS * renew_interval:
        return STALE
    if heartbeat_age > stale_after:
        return "unresponsive"
    return (health_state or "starting") if active else STANDBY


async def agent_processes(
    database: DatabaseSettings, leases: LeaseSettings, stale_after: float
) -> list[dict[str, Any]]:
    """One entry per agent process of the organisation (every node), from the database:
    role, node, host, pid, state, heartbeat age, lease epoch, whether it is active and,
    for the owner, `renewed_age`: seconds since its last renewal the database confirmed.

    `state` is `healthy`/`degraded` (the active agent's own report), `standby`,
    `stale` (the owner missed `STALE_RENEWALS` renewals: its lease still stands, but it
    is not renewing it), or `unresponsive` when its heartbeat is older than `stale_after`.
    """
    async with db.connection(database) as conn:
        rows = await conn.fetch(_Q["view"])
    out = []
    for r in rows:
        renewed = None if r["renewed_age"] is None else round(float(r["renewed_age"]), 3)
        out.append({
            "role": r["role"], "node": r["node"], "host": r["host"], "pid": r["pid"],
            "state": owner_state(bool(r["active"]), r["health_state"], r["heartbeat_age"], renewed,
                                 stale_after=stale_after,
                                 renew_interval=leases.lease_renew_interval),
            "active": bool(r["active"]), "epoch": r["epoch"],
            "heartbeat_age": round(float(r["heartbeat_age"]), 3),
            "renewed_age": renewed if r["active"] else None,
            "reason": r["health_reason"] if r["active"] else None,
        })
    return out
