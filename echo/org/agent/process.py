"""The agent's OS process: the role's lease or a standby, the role's tree while it holds
the lease, and the exit status.

`python -m echo.org ROLE` (echo/org/__main__.py) runs `run_agent`. The process waits
for the schema first (the database may be away: it stands by, degraded, meanwhile),
then its `LeaseKeeper` (echo/org/agent/lease_keeper.py) decides when the `RoleAgent` tree
(echo/org/agent/tree.py) runs and when it is halted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio

from echo import db
from echo.config import Settings
from echo.errors import StoreUnavailable
from echo.logs import fields
from echo.org.agent.tree import RoleAgent
from echo.org.leases import Lease, Predecessor
from echo.org.roles import Role
from echo.runtime import Backoff

log = logging.getLogger(__name__)


async def ensure_schema(settings: Settings, *, attempts: int | None = None,
                        then: Callable[[], Awaitable[None]] | None = None) -> bool:
    """Migrate (and run `then`), retrying while the database is away. True once the
    schema is current."""
    retry = Backoff(initial=0.2, max=5.0).attempts()
    while attempts is None or retry.failures < attempts:
        try:
            await db.migrate(settings.database)
            if then is not None:
                await then()
            return True
        except StoreUnavailable as exc:
            delay = retry.next_delay()
            log.warning("cannot migrate yet (%s); retrying in %.1fs", exc, delay)
            await anyio.sleep(delay)
    return False


async def _cancel_on(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _every_second(fn: Callable[[], None]) -> None:
    while True:
        fn()
        await anyio.sleep(1.0)


async def run_agent(settings: Settings, role: Role, *, ready_line: str | None,
                    predecessor: Predecessor | None = None) -> int:
    """Run one agent until SIGTERM/SIGINT, its parent's death, or its tree giving up.

    The process holds the role's lease (echo/org/leases.py) and runs the role's tree
    while it does; otherwise it stands by, and says so once on stdout. It prints
    `ready_line` (if any: only a supervisor that waits for it asks for one) once it is
    settled either way. Returns the exit status: 0 after a clean stop, 1 if the tree
    gave up. A `predecessor` (the dead process its supervisor replaces) lets it take
    the role that process held at once, rather than after the lease expires.
    """
    import os
    import sys

    from echo.org.agent.lease_keeper import LeaseKeeper
    from echo.org.agent.standby import announce_standby, exit_with_parent
    from echo.org.leases import Owner
    from echo.org.node.organisation import install_stop_signals
    from echo.runtime import gave_up

    db.set_application_name(f"echo-agent:{settings.namespace}:{role.name}")
    stop = anyio.Event()
    undo = install_stop_signals(stop)
    keeper = LeaseKeeper(settings.leases, settings.database, role.name, predecessor=predecessor)
    await keeper.open()
    settled = anyio.Event()

    def ready() -> None:
        if not settled.is_set():
            if ready_line:
                sys.stdout.write(f"{ready_line} {role.name} {os.getpid()}\n")
                sys.stdout.flush()
            settled.set()

    def on_standby(owner: Owner | None, error: str | None) -> None:
        announce_standby(settings, role, owner, error)
        ready()

    async def act(lease: Lease, quit_: anyio.Event) -> object:
        # The keeper's renewals carry the agent's heartbeat while it says nothing new.
        agent = RoleAgent(settings, role, fence=lease.fence,
                          heartbeat_carrier=lambda: keeper.heartbeat_at)
        await agent.open()
        assert agent.database is not None
        # A write the fence refused: the lease is gone, whatever the keeper knows yet.
        agent.database.on_fenced = lambda exc: keeper.lost(f"the fence refused a write ({exc})")
        try:
            try:
                await agent.sync_governor()
            except StoreUnavailable as exc:  # the tree degrades and retries by itself
                log.warning("%s: budgets not written yet: %s", role.name, exc)
            if keeper.halted.is_set():
                return None
            tree = agent.supervisor()
            await tree.start()
            log.info("%s agent active (pid %s, epoch %s)", role.name, os.getpid(), lease.epoch,
                     extra=fields(role=role.name))
            ready()
            async with anyio.create_task_group() as tg:

                async def quit_on_exit() -> None:
                    await tree.wait()
                    quit_.set()

                tg.start_soon(quit_on_exit)
                await quit_.wait()
                with anyio.CancelScope(shield=True):
                    reason = await agent.stop(tree, keeper.halted)
                tg.cancel_scope.cancel()
            if keeper.halted.is_set():
                log.warning("%s: the role's tree is down, its child processes killed",
                            role.name, extra=fields(role=role.name, event="halted",
                                                    at=round(keeper.clock(), 6),
                                                    deadline=round(keeper.valid_until, 6)))
            return reason
        finally:
            with anyio.CancelScope(shield=True):
                await agent.close(at_once=keeper.halted.is_set())

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(exit_with_parent)
            if not await ensure_schema(settings, attempts=1):
                with anyio.CancelScope() as waiting:
                    tg.start_soon(_cancel_on, stop, waiting)
                    async with anyio.create_task_group() as beating:
                        # Degraded, and fresh about it: a heartbeat once a second, so
                        # status never calls a waiting agent `unresponsive`.
                        beating.start_soon(_every_second, lambda: on_standby(
                            None, "the database is unavailable; waiting for it"))
                        await ensure_schema(settings)
                        beating.cancel_scope.cancel()
                    waiting.cancel()
            reason = await keeper.run(act, stop=stop, on_standby=on_standby)
            tg.cancel_scope.cancel()
        escalation = gave_up(reason) if isinstance(reason, str | tuple | BaseException) else None
        if escalation is not None:
            log.error("%s agent gave up: %s", role.name, escalation)
            sys.stderr.write(f"error: {role.name} agent gave up: {escalation}\n")
            return 1
        log.info("%s agent stopped", role.name)
        return 0
    finally:
        undo()
        with anyio.CancelScope(shield=True):
            await keeper.close()
