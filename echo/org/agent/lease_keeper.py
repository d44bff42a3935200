"""LeaseKeeper: one agent process's hold on its role's lease, or its wait for it.

It carries out the rules that echo/org/leases.py sets out (acquire, restart, renew,
the owner's rule, the deadline, release, hand-over) with its own small pool, unfenced,
so that a renewal never queues behind the role's writes. `run_agent`
(echo/org/agent/process.py) runs the role's tree inside `LeaseKeeper.run`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from echo import db
from echo.errors import StoreUnavailable
from echo.logs import fields
from echo.org.leases import ACTIVE, STANDBY, Lease, Owner, Predecessor
from echo.runtime.ticks import until_tick
from echo.slices import DatabaseSettings, LeaseSettings
from echo.work.process import stop_margin

log = logging.getLogger(__name__)

_Q = db.load_queries("leases")


#: What the keeper's caller runs while it holds the lease: the role's tree. It returns
#: when `quit` is set or the tree ended; its result is the tree's exit reason.
Act = Callable[[Lease, anyio.Event], Awaitable[object]]


class LeaseKeeper:
    """Holds one role's lease for one agent process, or stands by for it."""

    def __init__(
        self,
        settings: LeaseSettings,
        database: DatabaseSettings,
        role: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        predecessor: Predecessor | None = None,
    ) -> None:
        self.settings = settings
        self.database = database  # its own pool's; `command_timeout` bounds each statement
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
        #: When (`clock`) the last renewal that refreshed the agent's heartbeat row was
        #: sent (echo/org/health.py: a renewal carries an unchanged agent's heartbeat).
        self.heartbeat_at = float("-inf")
        self.last_error: str | None = None
        self.quit_reason: str | None = None
        #: Set when the tree must stop at once (see echo/org/leases.py), per tenure.
        self.halted = anyio.Event()
        self._quit: anyio.Event | None = None

    async def open(self) -> None:
        """Its own small pool, unfenced, so a slow write of the tree never holds up a
        renewal (a lazy pool: opening works with the database down)."""
        self.db = await db.Database.open(self.database, min_size=0, max_size=1)

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()

    # -- statements -------------------------------------------------------------------

    async def _run(self, name: str, *args: Any, fetch: str = "execute") -> Any:
        assert self.db is not None, "call open() first"
        try:
            with anyio.fail_after(self.database.command_timeout):
                async with self.db.acquire() as conn:
                    return await getattr(conn, fetch)(_Q[name], *args)
        except TimeoutError:
            raise StoreUnavailable(
                f"the database did not answer within {self.database.command_timeout:g} s"
            ) from None

    async def try_acquire(self) -> Lease | None:
        """Take the role if it is free, its lease expired, or it is still held by the
        dead predecessor this process replaces (echo/org/leases.py: Restart)."""
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
        """(still held, the live standby asking for the role if any). The process's beat
        (`beat`) and the agent's heartbeat go in the same statement, only if the renewal
        matched: one round trip."""
        assert self.lease is not None
        sent = self.clock()
        rows = await self._run("renew_beat", self.role, self.holder, self.lease.epoch,
                               self.settings.lease_seconds, self.node, self.host, self.pid,
                               self.state, fetch="fetch")
        if not rows:
            return False, None
        self._confirmed(self.lease, sent)
        # Not carried (the row is another process's, `down`, or not written yet): the
        # agent's monitor writes its next beat itself.
        self.heartbeat_at = sent if rows[0]["heartbeat"] else float("-inf")
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
        """The owner's rule (echo/org/leases.py): its last confirmed renewal still covers now."""
        return self.lease is not None and self.clock() < self.valid_until

    @property
    def deadline(self) -> float:
        """When the tree is halted unless a renewal is confirmed first (echo/org/leases.py)."""
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
        """While active: renew and beat (one statement); set `quit_` when asked for by a
        preferred node or `stop` is set (and go on renewing while the tree stops in order),
        and halt (echo/org/leases.py) when the lease is lost or the deadline comes
        unrenewed."""
        interval, lease = self.settings.lease_renew_interval, self.settings.lease_seconds
        unrenewed = f"no renewal confirmed for {lease - stop_margin(lease):g} s"

        while True:
            now = self.clock()  # in step with the process's other timers (echo.runtime.ticks)
            with anyio.move_on_after(max(min(until_tick(interval, now), self.deadline - now), 0)):
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
