"""A killed agent's own supervisor restarts it, and the restart takes the role back at
once: it never waits out a lease that only the dead process held, the epoch still
increments, and the dead process's epoch stays fenced.

Real `echoctl up` agent processes with a 30 s lease: "at once" is checked against the
database's clock (the dead owner's lease had not expired when the new epoch was
already active), not against a wall-clock timing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import anyio
import psutil
import pytest

from echo import db as dbmod
from echo.config import Settings
from echo.errors import LeaseLost
from echo.org.leases import agent_processes
from echo.org.node.state import read_org
from tests.helpers import all_in, cli_env, run_cli, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

TWO = ["ceo", "cto"]


async def test_a_killed_agent_takes_its_role_back_before_its_old_lease_expires(
    org_settings: Settings, db: dbmod.Database
) -> None:
    s = org_settings.model_copy(update={"lease_seconds": 30.0})
    started = await run_cli(s, "up", "--detach", "--no-console", "--roles", ",".join(TWO), timeout=120)
    assert started.returncode == 0, started.stderr
    await wait_until(all_in(s, "healthy", TWO), timeout=90, interval=0.1)
    async with db.acquire() as conn:
        old = await conn.fetchrow("SELECT holder, pid, epoch, expires_at FROM role_leases WHERE role = 'cto'")

    os.kill(old["pid"], signal.SIGKILL)

    async def new_owner_healthy() -> bool:
        rows = await agent_processes(s.database, s.leases, stale_after=s.lease_seconds)
        return any(r["role"] == "cto" and r["active"] and r["state"] == "healthy"
                   and r["pid"] != old["pid"] for r in rows)

    # Longer than the lease: the old code got there too, but only after the lease expired.
    await wait_until(new_owner_healthy, timeout=90, interval=0.05)
    async with db.acquire() as conn:
        now_row = await conn.fetchrow(
            "SELECT epoch, pid, node, $1::timestamptz > now() AS old_lease_unexpired "
            "FROM role_leases WHERE role = 'cto'", old["expires_at"])
    assert now_row["epoch"] == old["epoch"] + 1
    assert now_row["pid"] != old["pid"] and now_row["node"] == s.node
    assert now_row["old_lease_unexpired"], "the restart waited for the dead agent's lease to expire"

    # The dead owner's epoch is fenced: a late write under it is refused and writes nothing.
    fenced = await dbmod.Database.open(s.database, max_size=1, fence=f"cto/{old['epoch']}/{old['holder']}")
    try:
        with pytest.raises(LeaseLost, match="no longer held by this agent"):
            async with fenced.transaction() as conn:
                await conn.execute("DELETE FROM agent_health WHERE role = 'cto'")
    finally:
        await fenced.close()
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM agent_health WHERE role = 'cto'") == 1


async def test_the_next_up_after_a_killed_up_takes_the_roles_back_before_the_old_leases_expire(
    org_settings: Settings, db: dbmod.Database
) -> None:
    s = org_settings.model_copy(update={"lease_seconds": 30.0})
    up = subprocess.Popen([sys.executable, "-m", "echo", "up", "--no-console", "--roles", ",".join(TWO)],
                          env=cli_env(s), stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_until(all_in(s, "healthy", TWO), timeout=90, interval=0.1)
        record = read_org(s)
        assert record is not None
        agents = [psutil.Process(record.agents[r].pid) for r in TWO]  # type: ignore[arg-type]
        async with db.acquire() as conn:
            old = {r["role"]: r for r in await conn.fetch("SELECT role, epoch, expires_at FROM role_leases")}
        up.kill()  # its agents die with it; no one reaps them here
        up.wait(timeout=30)
        _gone, alive = await anyio.to_thread.run_sync(lambda: psutil.wait_procs(agents, timeout=30))
        assert alive == []
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(timeout=30)

    again = await run_cli(s, "up", "--detach", "--no-console", "--roles", ",".join(TWO), timeout=120)
    assert again.returncode == 0, again.stderr
    await wait_until(all_in(s, "healthy", TWO), timeout=90, interval=0.1)
    async with db.acquire() as conn:
        for role in TWO:
            epoch, unexpired = await conn.fetchrow(
                "SELECT epoch, $2::timestamptz > now() FROM role_leases WHERE role = $1",
                role, old[role]["expires_at"])
            assert epoch == old[role]["epoch"] + 1
            assert unexpired, f"{role} waited for the dead agent's lease to expire"
