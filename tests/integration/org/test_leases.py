"""Role leases against real Postgres: acquire, stand by, expiry by the database's
clock, release, hand-over, the owner's rule with the database down, fencing, node
names, and the organisation's view."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import pytest

from echo import db as dbmod
from echo.config import Settings
from echo.errors import LeaseLost, UsageError
from echo.org.agent.lease_keeper import LeaseKeeper
from echo.org.leases import Lease, Predecessor, agent_processes
from echo.org.node.nodes import claim_node, keep_node
from tests.conftest import make_settings
from tests.helpers import wait_until


def short(s: Settings, **extra: object) -> Settings:
    return s.model_copy(update={"lease_seconds": 1.0, "lease_renew_interval": 0.2,
                                "lease_takeover_grace": 0.0, **extra})


async def keeper(s: Settings, role: str = "cto", **kwargs: object) -> LeaseKeeper:
    k = LeaseKeeper(s.leases, s.database, role, **kwargs)  # type: ignore[arg-type]
    await k.open()
    return k


async def test_one_holder_a_standby_sees_it_and_release_hands_it_on(settings: Settings) -> None:
    a, b = await keeper(settings), await keeper(settings)
    try:
        first = await a.try_acquire()
        assert first is not None and first.epoch == 1
        assert await b.try_acquire() is None
        owner = await b.owner()
        assert owner is not None and owner.held and owner.holder == a.holder
        assert owner.pid == os.getpid() and owner.node == settings.node
        await a.release()
        second = await b.try_acquire()
        assert second is not None and second.epoch == 2
        held, _ = await a.renew() if a.lease else (False, None)
        assert not held
    finally:
        await a.close()
        await b.close()


async def test_a_restart_takes_over_only_the_lease_of_exactly_its_dead_predecessor(
    settings: Settings,
) -> None:
    s = settings.model_copy(update={"lease_seconds": 600.0})  # expiry never frees it here
    dead = await keeper(s)
    dead.pid = 4_000_001  # one process per keeper, as if each were its own agent process
    others: list[LeaseKeeper] = []

    async def restart(node: str, predecessor: Predecessor, pid: int) -> LeaseKeeper:
        k = await keeper(s.model_copy(update={"node": node}), predecessor=predecessor)
        k.pid = pid
        others.append(k)
        return k

    try:
        first = await dead.try_acquire()
        assert first is not None and first.epoch == 1
        # Anything but exactly (this node, that pid, that epoch) is someone else's lease.
        for node, told in (("elsewhere", Predecessor(dead.pid, 1)), (s.node, Predecessor(dead.pid + 1, 1)),
                           (s.node, Predecessor(dead.pid, 7))):
            assert await (await restart(node, told, 4_000_100 + len(others))).try_acquire() is None
        successor = await restart(s.node, Predecessor(dead.pid, 1), 4_000_002)
        taken = await successor.try_acquire()
        assert taken is not None and taken.epoch == 2  # a new epoch: the dead one stays fenced
        # Told only the pid (it died before writing its epoch down) is enough too, once.
        again = await restart(s.node, Predecessor(successor.pid), 4_000_003)
        assert (await again.try_acquire()) is not None
        late = await restart(s.node, Predecessor(dead.pid, 1), 4_000_004)
        assert await late.try_acquire() is None  # stale knowledge takes nothing
        owner = await late.owner()
        assert owner is not None and owner.holder == again.holder and owner.epoch == 3
    finally:
        for k in (dead, *others):
            await k.close()


async def test_expiry_is_the_databases_clock_not_a_nodes(settings: Settings) -> None:
    """A node whose clock runs an hour ahead cannot take a lease early: only the
    database's now() decides expiry (the keepers never send a time)."""
    a = await keeper(settings)
    skewed = await keeper(settings, clock=lambda: time.monotonic() + 3600)
    try:
        assert await a.try_acquire() is not None
        assert await skewed.try_acquire() is None
        async with dbmod.connection(settings.database) as conn:  # the database says it expired
            await conn.execute("UPDATE role_leases SET expires_at = now() - interval '1 ms'")
        taken = await skewed.try_acquire()
        assert taken is not None and taken.epoch == 2
    finally:
        await a.close()
        await skewed.close()


async def test_the_owners_rule_counts_from_the_last_confirmed_renewal(settings: Settings) -> None:
    now = [100.0]
    a = await keeper(settings, clock=lambda: now[0])
    try:
        assert await a.try_acquire() is not None
        now[0] += settings.lease_seconds - 0.001
        assert a.valid()
        now[0] += 0.002
        assert not a.valid()  # no renewal confirmed since: stop acting
        held, _ = await a.renew()  # the database still holds it for us: valid again
        assert held and a.valid()
    finally:
        await a.close()


async def test_a_renewal_beats_the_process_row_and_a_lost_one_leaves_it(settings: Settings) -> None:
    """The owner's renewal and its process beat are one statement: the row is refreshed
    only when the renewal matched."""
    a, b = await keeper(settings), await keeper(settings)
    try:
        assert await a.try_acquire() is not None
        beat = "SELECT state, heartbeat_at FROM role_agents WHERE holder = $1"
        async with dbmod.connection(settings.database) as conn:
            assert await conn.fetchrow(beat, a.holder) is None
        held, _ = await a.renew()
        async with dbmod.connection(settings.database) as conn:
            row = await conn.fetchrow(beat, a.holder)
            assert held and row is not None and row["state"] == "active"
            await conn.execute("UPDATE role_leases SET expires_at = now() - interval '1 ms'")
        assert await b.try_acquire() is not None  # taken over: a's renewal matches nothing
        held, _ = await a.renew()
        async with dbmod.connection(settings.database) as conn:
            assert not held and await conn.fetchrow(beat, a.holder) == row
    finally:
        await a.close()
        await b.close()


async def test_a_write_with_a_lost_epoch_is_refused_and_writes_nothing(settings: Settings) -> None:
    a, b = await keeper(settings), await keeper(settings)
    lease = await a.try_acquire()
    assert lease is not None
    fenced = await dbmod.Database.open(settings.database, max_size=1, fence=lease.fence)
    try:
        async with fenced.transaction() as conn:  # the owner writes as the role
            await conn.execute("INSERT INTO agent_cursors (role, last_message_id) VALUES ('cto', 1)")
        async with dbmod.connection(settings.database) as conn:
            await conn.execute("UPDATE role_leases SET expires_at = now()")
        assert await b.try_acquire() is not None
        for statement in ("UPDATE agent_cursors SET last_message_id = 2 WHERE role = 'cto'",
                          "INSERT INTO agent_inbox (role, message_id) SELECT 'cto', 1 WHERE false",
                          "DELETE FROM agent_health WHERE role = 'cto'"):
            with pytest.raises(LeaseLost, match="no longer held by this agent"):
                async with fenced.transaction() as conn:
                    await conn.execute(statement)
        async with dbmod.connection(settings.database) as conn:
            assert await conn.fetchval("SELECT last_message_id FROM agent_cursors") == 1
            # An unfenced connection (the CLI, another process) is not affected.
            await conn.execute("UPDATE agent_cursors SET last_message_id = 3 WHERE role = 'cto'")
    finally:
        await fenced.close()
        await a.close()
        await b.close()


async def test_a_write_the_fence_refuses_halts_the_owner_at_once(settings: Settings) -> None:
    """The owner learns from the fence that its lease is gone, long before its next
    renewal would say so: it halts its tree there and then (echo/org/agent/process.py wires
    `Database.on_fenced` to `LeaseKeeper.lost`)."""
    s = settings.model_copy(update={"lease_seconds": 120.0, "lease_renew_interval": 60.0})
    a, b = await keeper(s), await keeper(s)
    stop = anyio.Event()
    seen: list[tuple[bool, bool, str | None]] = []

    async def act(lease: Lease, quit_: anyio.Event) -> object:
        fenced = await dbmod.Database.open(s.database, max_size=1, fence=lease.fence)
        fenced.on_fenced = lambda exc: a.lost(f"the fence refused a write ({exc})")
        try:
            async with dbmod.connection(s.database) as conn:  # the lease passes on meanwhile
                await conn.execute("UPDATE role_leases SET expires_at = now()")
            assert await b.try_acquire() is not None
            with pytest.raises(LeaseLost):
                async with fenced.transaction() as conn:
                    await conn.execute("DELETE FROM agent_health WHERE role = 'cto'")
            seen.append((a.halted.is_set(), quit_.is_set(), a.quit_reason))
        finally:
            await fenced.close()
        stop.set()
        return None

    try:
        with anyio.fail_after(60):
            await a.run(act, stop=stop)
        (halted, quit_set, why), = seen
        assert halted and quit_set and why is not None and "the fence refused a write" in why
    finally:
        await a.close()
        await b.close()


async def test_an_expired_lease_fences_even_before_anyone_takes_over(settings: Settings) -> None:
    a = await keeper(settings)
    lease = await a.try_acquire()
    assert lease is not None
    fenced = await dbmod.Database.open(settings.database, max_size=1, fence=lease.fence)
    try:
        async with dbmod.connection(settings.database) as conn:
            await conn.execute("UPDATE role_leases SET expires_at = now()")
        with pytest.raises(LeaseLost):
            async with fenced.acquire() as conn:
                await conn.execute("INSERT INTO agent_cursors (role, last_message_id) VALUES ('cto', 1)")
    finally:
        await fenced.close()
        await a.close()


async def run_keeper(k: LeaseKeeper, stop: anyio.Event, log: list[tuple[str, int]]) -> None:
    async def act(lease: Lease, quit_: anyio.Event) -> object:
        log.append((k.holder, lease.epoch))
        await quit_.wait()
        return None

    await k.run(act, stop=stop)


async def test_a_preferred_node_takes_the_role_back_with_no_gap(settings: Settings) -> None:
    s = short(settings)
    owner = await keeper(s)
    preferred = await keeper(s.model_copy(update={"prefer": "cto"}))
    acts: list[tuple[str, int]] = []
    gaps: list[float] = []
    stop = anyio.Event()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_keeper, owner, stop, acts)
            await wait_until(lambda: len(acts) == 1, timeout=10)

            async def watch() -> None:  # the role never lacks a holder by the database
                async with dbmod.connection(s.database) as conn:
                    while not stop.is_set():
                        if not await conn.fetchval(
                                "SELECT holder IS NOT NULL AND expires_at > now() FROM role_leases"):
                            gaps.append(time.monotonic())
                        await anyio.sleep(0.005)

            tg.start_soon(watch)
            tg.start_soon(run_keeper, preferred, stop, acts)
            await wait_until(lambda: len(acts) == 2, timeout=20)
            assert acts == [(owner.holder, 1), (preferred.holder, 2)]
            view = await agent_processes(s.database, s.leases, stale_after=5)
            assert sorted((p["active"], p["epoch"]) for p in view) == [(False, None), (True, 2)]
            stop.set()
        assert gaps == []
    finally:
        await owner.close()
        await preferred.close()


async def test_with_the_database_down_the_owner_stops_acting_within_the_lease(
    own_postgres, namespace: str, tmp_path: Path
) -> None:
    s = short(make_settings(own_postgres.dsn, None, namespace, tmp_path / "state"),
              connect_timeout=0.5, command_timeout=0.5)
    await dbmod.migrate(s.database)
    k = await keeper(s)
    stop, acting, stopped = anyio.Event(), anyio.Event(), anyio.Event()

    told: list[tuple[float, float]] = []

    async def act(lease: Lease, quit_: anyio.Event) -> object:
        acting.set()
        await quit_.wait()
        told.append((k.clock(), k.valid_until))
        stopped.set()
        return None

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: k.run(act, stop=stop))
            await acting.wait()
            await anyio.to_thread.run_sync(own_postgres.stop, "immediate")
            await stopped.wait()
            # Halted (at once, not in order) by the deadline, before the lease can pass.
            (at, valid_until), = told
            assert k.halted.is_set() and at < valid_until
            assert k.quit_reason is not None
            assert "no renewal confirmed for 0.75 s" in k.quit_reason
            stop.set()
    finally:
        await k.close()


async def test_a_node_name_is_held_by_one_up_at_a_time(settings: Settings) -> None:
    s = settings.model_copy(update={"node": "alpha"})
    await claim_node(s, lambda pid: True)
    async with dbmod.connection(s.database) as conn:  # as if another `up` (pid 1) held it
        await conn.execute("UPDATE echo_nodes SET pid = 1")
    other = s.model_copy(update={"state_dir": settings.state_dir / "elsewhere"})
    with pytest.raises(UsageError, match=r"node 'alpha' is already up .* --node NAME"):
        await claim_node(other, lambda pid: True)
    # A seat left behind by a dead `up` on this host is taken at once.
    seat = await claim_node(other, lambda pid: pid != 1)
    assert seat.name == "alpha" and seat.pid == os.getpid()
    async with anyio.create_task_group() as tg:  # leaving frees the name
        tg.start_soon(keep_node, s, seat)
        await anyio.sleep(0)
        tg.cancel_scope.cancel()
    async with dbmod.connection(s.database) as conn:
        assert await conn.fetchval("SELECT count(*) FROM echo_nodes") == 0
