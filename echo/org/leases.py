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
  the lease to `now() + lease_seconds` (5 s) in the database.
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
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from echo import db
from echo.bus.channels import ROLE_RE
from echo.config import Settings
from echo.errors import StoreUnavailable
from echo.logs import fields
from echo.work.process import stop_margin

log = logging.getLogger(__name__)

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


#: What the keeper's caller runs while it holds the lease: the role's tree. It returns
#: when `quit` is set or the tree ended; its result is the tree's exit reason.
Act = Callable[[Lease, anyio.Event], Awaitable[object]]


class LeaseKeeper:
    """Holds one role's lease for one agent process, or stands by for it."""

    def __init__(
        self,
        settings: Settings,
        role: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        predecessor: Predecessor | None = None,
    ) -> None:
        self.settings = settings
        self.predecessor = predecessor
        self.role = role
        self.node = settings.node
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.holder = uuid.uuid4().hex
        self.clock = clock
        self.preferred = role in settings.preferred_roles
        self.db: db.Database | None = None
        self.state = STANDBY
        self.lease: Lease | None = None
        self.valid_until = 0.0
        self.last_error: str | None = None
        self.quit_reason: str | None = None
        #: Set when the tree must stop at once (see the module doc), per tenure.
        self.halted = anyio.Event()
        self._quit: anyio.Event | None = None

    async def open(self) -> None:
        """Its own small pool, unfenced, so a slow write of the tree never holds up a
        renewal (a lazy pool: opening works with the database down)."""
        self.db = await db.Database.open(self.settings, min_size=0, max_size=1)

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()

    # -- statements -------------------------------------------------------------------

    async def _run(self, name: str, *args: Any, fetch: str = "execute") -> Any:
        assert self.db is not None, "call open() first"
        try:
            with anyio.fail_after(self.settings.command_timeout):
                async with self.db.acquire() as conn:
                    return await getattr(conn, fetch)(_Q[name], *args)
        except TimeoutError:
            raise StoreUnavailable(
                f"the database did not answer within {self.settings.command_timeout:g} s"
            ) from None

    async def try_acquire(self) -> Lease | None:
        """Take the role if it is free, its lease expired, or it is still held by the
        dead predecessor this process replaces (module doc: Restart)."""
        sent = self.clock()
        dead = self.predecessor
        epoch = await self._run("acquire", self.role, self.holder, self.node, self.pid,
                                self.settings.lease_seconds, dead.pid if dead else None,
                                dead.epoch if dead else None, fetch="fetchval")
        if epoch is None:
            return None
        if dead is not None:
            log.info("%s: acquired the role (epoch %s); it was free or held by the dead "
                     "predecessor pid %s", self.role, epoch, dead.pid)
            self.predecessor = None  # once only: that process's lease is gone now
        return self._confirmed(Lease(self.role, self.holder, int(epoch)), sent)

    async def renew(self) -> tuple[bool, str | None]:
        """(still held, the live standby asking for the role if any)."""
        assert self.lease is not None
        sent = self.clock()
        rows = await self._run("renew", self.role, self.holder, self.lease.epoch,
                               self.settings.lease_seconds, fetch="fetch")
        if not rows:
            return False, None
        self._confirmed(self.lease, sent)
        return True, rows[0]["wanted_by"]

    async def release(self) -> None:
        if self.lease is not None:
            await self._run("release", self.role, self.holder, self.lease.epoch)
            log.info("%s: released the lease (epoch %s)", self.role, self.lease.epoch)
        self.lease, self.state = None, STANDBY

    async def hand_over(self) -> bool:
        """Pass the role to the standby that asked for it; False if it is gone."""
        assert self.lease is not None
        epoch = await self._run("hand_over", self.role, self.holder, self.lease.epoch,
                                self.settings.lease_seconds, fetch="fetchval")
        if epoch is None:
            return False
        log.info("%s: handed the role over (epoch %s)", self.role, epoch)
        self.lease, self.state = None, STANDBY
        return True

    async def owner(self) -> Owner | None:
        row = await self._run("peek", self.role, fetch="fetchrow")
        if row is None:
            return None
        return Owner(row["holder"], row["node"], row["pid"], row["epoch"], row["held"],
                     row["expires_in"], row["wanted_by"])

    async def beat(self) -> None:
        """This process's row in the organisation's view (`echoctl status`)."""
        await self._run("beat", self.holder, self.role, self.node, self.host, self.pid, self.state)

    async def forget(self) -> None:
        await self._run("forget", self.holder)

    def _confirmed(self, lease: Lease, sent: float) -> Lease:
        self.lease, self.state = lease, ACTIVE
        self.valid_until = sent + self.settings.lease_seconds
        return lease

    def valid(self) -> bool:
        """The owner's rule (module doc): its last confirmed renewal still covers now."""
        return self.lease is not None and self.clock() < self.valid_until

    @property
    def deadline(self) -> float:
        """When the tree is halted unless a renewal is confirmed first (module doc)."""
        return self.valid_until - stop_margin(self.settings.lease_seconds)

    def lost(self, why: str) -> None:
        """Halt the tree now: the lease is gone (the fence refused a write as the role)."""
        if self._quit is not None and not self.halted.is_set():
            self._halt(self._quit, why)

    def _halt(self, quit_: anyio.Event, why: str) -> None:
        self.quit_reason = why
        self.halted.set()
        quit_.set()
        log.warning("%s: %s; the lease may pass to another agent at monotonic %.3f: "
                    "stopping the role's tree at once", self.role, why, self.valid_until,
                    extra=fields(role=self.role, event="halting",
                                 deadline=round(self.valid_until, 6)))

    # -- the loop -----------------------------------------------------------------------

    async def run(
        self,
        act: Act,
        *,
        stop: anyio.Event,
        on_standby: Callable[[Owner | None, str | None], None] = lambda _o, _e: None,
    ) -> object:
        """Stand by, hold the role while `act` runs, and again, until `stop` is set.

        Returns the last exit reason `act` returned (None if it never ran). A tree that
        ends by itself (it gave up) ends the loop too: the caller decides what follows.
        """
        reason: object = None
        while not stop.is_set():
            if self.valid():
                lease = self.lease
            else:
                sent = self.clock()
                lease = await self._stand_by(stop, on_standby)
                if lease is not None:
                    log.info("%s: holds the lease (epoch %s)", self.role, lease.epoch,
                             extra=fields(role=self.role, event="acquired", epoch=lease.epoch,
                                          sent=round(sent, 6), at=round(self.clock(), 6)))
            if lease is None:
                break
            quit_ = self._quit = anyio.Event()
            self.quit_reason = None
            self.halted = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep, quit_, stop)
                reason = await act(lease, quit_)
                tg.cancel_scope.cancel()
            self._quit = None
            if stop.is_set() or self.quit_reason is None:  # stopped, or the tree ended
                await self._quietly(self.release)
                break
            if self.quit_reason == "hand-over":
                if not await self._quietly(self.hand_over, default=False):
                    continue  # the asker is gone: keep the role, same epoch
            else:
                log.warning("%s: %s; standing by", self.role, self.quit_reason)
                self.lease, self.state = None, STANDBY
        await self._quietly(self.forget)
        return reason

    async def _quietly(self, step: Callable[[], Awaitable[Any]], default: Any = None) -> Any:
        """A step on the way out: the database may be down; expiry then does the job."""
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(2):
                return await step()
        except (StoreUnavailable, TimeoutError) as exc:
            log.warning("%s: %s", self.role, exc)
            return default

    async def _keep(self, quit_: anyio.Event, stop: anyio.Event) -> None:
        """While active: renew and beat; set `quit_` when asked for by a preferred node
        or `stop` is set (and go on renewing while the tree stops in order), and halt
        (module doc) when the lease is lost or the deadline comes unrenewed."""
        interval, lease = self.settings.lease_renew_interval, self.settings.lease_seconds
        unrenewed = f"no renewal confirmed for {lease - stop_margin(lease):g} s"

        while True:
            with anyio.move_on_after(max(min(interval, self.deadline - self.clock()), 0)):
                if quit_.is_set():
                    await anyio.sleep_forever()
                await stop.wait()
            if stop.is_set() and not quit_.is_set():
                quit_.set()  # an ordered stop: `act` winds the tree down, renewals go on
            if self.clock() >= self.deadline:
                self._halt(quit_, unrenewed)
                return
            try:  # never past the deadline: the check below must come on time
                with anyio.move_on_after(max(self.deadline - self.clock(), 0)):
                    held, wanted_by = await self.renew()
                    if not held:
                        self._halt(quit_, "lost the lease to another agent")
                        return
                    await self.beat()
                    self.last_error = None
                    if wanted_by and not self.preferred and not quit_.is_set():
                        self.quit_reason = "hand-over"
                        quit_.set()
            except StoreUnavailable as exc:
                self.last_error = str(exc)
            if self.clock() >= self.deadline:
                self._halt(quit_, unrenewed)
                return

    async def _stand_by(
        self, stop: anyio.Event, on_standby: Callable[[Owner | None, str | None], None]
    ) -> Lease | None:
        """Wait for the role: poll, take it when it is free, ask for it when preferred."""
        interval = self.settings.lease_renew_interval
        since, asked = self.clock(), False
        self.state = STANDBY
        while not stop.is_set():
            wait = interval
            owner: Owner | None = None
            try:
                await self.beat()
                lease = await self.try_acquire()
                if lease is not None:
                    return lease
                sent = self.clock()
                owner = await self.owner()
                if owner is not None and owner.holder == self.holder and owner.held:
                    # Handed over to us, or still ours after an outage: valid for what the
                    # database says is left, counted from before we asked.
                    self._confirmed(Lease(self.role, self.holder, owner.epoch), sent)
                    self.valid_until = sent + owner.expires_in
                    return self.lease
                self.last_error = None
                if owner is not None and owner.held:
                    wait = min(interval, owner.expires_in + 0.005)
                    if (self.preferred and not asked
                            and self.clock() - since >= self.settings.lease_takeover_grace):
                        await self._run("ask_for", self.role, self.holder)
                        asked = True
                        log.info("%s: this node prefers the role; asked node %s for it",
                                 self.role, owner.node)
                    if asked:
                        wait = min(wait, interval / 4)
                else:
                    wait = 0.05  # freed between the two statements: try again now
            except StoreUnavailable as exc:
                self.last_error = str(exc)
            on_standby(owner, self.last_error)
            with anyio.move_on_after(wait):
                await stop.wait()
        return None


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


async def agent_processes(settings: Settings, stale_after: float) -> list[dict[str, Any]]:
    """One entry per agent process of the organisation (every node), from the database:
    role, node, host, pid, state, heartbeat age, lease epoch, whether it is active and,
    for the owner, `renewed_age`: seconds since its last renewal the database confirmed.

    `state` is `healthy`/`degraded` (the active agent's own report), `standby`,
    `stale` (the owner missed `STALE_RENEWALS` renewals: its lease still stands, but it
    is not renewing it), or `unresponsive` when its heartbeat is older than `stale_after`.
    """
    async with db.connection(settings) as conn:
        rows = await conn.fetch(_Q["view"])
    out = []
    for r in rows:
        renewed = None if r["renewed_age"] is None else round(float(r["renewed_age"]), 3)
        out.append({
            "role": r["role"], "node": r["node"], "host": r["host"], "pid": r["pid"],
            "state": owner_state(bool(r["active"]), r["health_state"], r["heartbeat_age"], renewed,
                                 stale_after=stale_after,
                                 renew_interval=settings.lease_renew_interval),
            "active": bool(r["active"]), "epoch": r["epoch"],
            "heartbeat_age": round(float(r["heartbeat_age"]), 3),
            "renewed_age": renewed if r["active"] else None,
            "reason": r["health_reason"] if r["active"] else None,
        })
    return out
