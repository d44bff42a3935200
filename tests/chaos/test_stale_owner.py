"""`echoctl status` does not call a stalled owner healthy: a SIGSTOPped agent that
holds its role's lease shows the time since its last renewal the database confirmed,
and reads `stale` once that is past two renewal intervals, long before its lease ends.

A real `echoctl up`; the lease (60 s) outlasts the test, so the pause is the only
thing that changes, and SIGCONT brings the owner back to `healthy` as the role's owner.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from echo.config import Settings
from echo.org.client import Client
from echo.org.status import OrgStatus
from tests.chaos.conftest import agent_pids
from tests.helpers import all_in, run_cli, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

TWO = ["ceo", "cto"]


async def status_of(s: Settings) -> OrgStatus:
    async with Client(s) as client:
        return await client.status()


def cto_owner(info: OrgStatus, pid: int) -> tuple[str, float | None, str]:
    """(state, renewal age) of the cto's active process, and the cto agent's state."""
    owner = [p for p in info.processes or [] if p.role == "cto" and p.pid == pid and p.active]
    agent = next(a for a in info.agents if a.role == "cto")
    assert len(owner) == 1, info.processes
    return owner[0].state, owner[0].renewed_age, agent.state


async def test_a_paused_owner_reads_stale_within_two_renewals_and_healthy_once_it_resumes(
    org_settings: Settings,
) -> None:
    s = org_settings.model_copy(update={"lease_seconds": 60.0, "lease_renew_interval": 1.0})
    started = await run_cli(s, "up", "--detach", "--no-console", "--roles", ",".join(TWO), timeout=120)
    assert started.returncode == 0, started.stderr
    await wait_until(all_in(s, "healthy", TWO), timeout=90, interval=0.1)
    pid = agent_pids(s, ["cto"])["cto"]
    assert pid is not None

    async def owner_is(state: str) -> bool:
        return cto_owner(await status_of(s), pid)[0] == state

    await wait_until(lambda: owner_is("healthy"), timeout=60, interval=0.1)
    os.kill(pid, signal.SIGSTOP)
    try:
        # Two renewals missed, the lease still held for most of its 60 s.
        await wait_until(lambda: owner_is("stale"), timeout=30, interval=0.1)
        info = await status_of(s)
        _state, renewed_age, agent_state = cto_owner(info, pid)
        assert renewed_age is not None and renewed_age > 2 * s.lease_renew_interval
        assert agent_state == "stale"
        shown = await run_cli(s, "status", "--json")
        entry = next(p for p in json.loads(shown.stdout)["processes"] if p["pid"] == pid)
        assert entry["state"] == "stale" and entry["active"] and entry["renewed_age"] > 2.0, entry
        text = await run_cli(s, "status")
        rows = [line.split() for line in text.stdout.splitlines()]  # the processes table
        assert ["cto", s.node, str(pid), "stale", "✓"] in [r[:5] for r in rows], text.stdout
    finally:
        os.kill(pid, signal.SIGCONT)
    await wait_until(lambda: owner_is("healthy"), timeout=60, interval=0.1)
    assert cto_owner(await status_of(s), pid)[2] == "healthy"
