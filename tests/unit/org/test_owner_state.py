"""How the organisation's view names an agent process (echo/org/leases.py
`owner_state`, echo/org/status.py `mark_stale_owners`): an owner that stopped renewing
is `stale` past two renewal intervals, however fresh its last report."""

from __future__ import annotations

from pathlib import Path

import pytest

from echo.config import Settings
from echo.org.leases import owner_state
from echo.org.status import AgentProcessStatus, AgentStatus, mark_stale_owners


@pytest.mark.parametrize(("active", "heartbeat", "renewed", "expected"), [
    (True, 0.5, 0.5, "healthy"),
    (True, 1.9, 2.0, "healthy"),      # two intervals exactly: not yet
    (True, 2.1, 2.1, "stale"),
    (True, 9.0, 9.0, "stale"),        # still holding a lease it no longer renews
    (False, 0.5, None, "standby"),
    (False, 9.0, None, "unresponsive"),
])
def test_an_owner_past_two_renewals_is_stale(active: bool, heartbeat: float, renewed: float | None,
                                             expected: str) -> None:
    assert owner_state(active, "healthy", heartbeat, renewed, stale_after=5.0,
                       renew_interval=1.0) == expected


def test_this_nodes_stale_owner_reads_stale_with_its_renewal_age(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path, node="n1", lease_renew_interval=1.0)
    agents = {r: AgentStatus(role=r, pid=pid, state="healthy")
              for r, pid in (("cto", 11), ("ceo", 12), ("chro", 13))}
    processes = [
        AgentProcessStatus(role="cto", node="n1", host="h", pid=11, state="stale", active=True,
                           heartbeat_age=3.0, renewed_age=3.2),
        AgentProcessStatus(role="ceo", node="n1", host="h", pid=12, state="healthy", active=True,
                           heartbeat_age=0.2, renewed_age=0.4),
        # Another node's owner of chro: not this node's agent of that role.
        AgentProcessStatus(role="chro", node="n2", host="h2", pid=13, state="stale", active=True,
                           heartbeat_age=3.0, renewed_age=3.0),
    ]
    mark_stale_owners(s, agents, processes)
    assert agents["cto"].state == "stale" and agents["cto"].renewed_age == 3.2
    assert agents["cto"].reason is not None and "no lease renewal confirmed for 3.2 s" in agents["cto"].reason
    assert (agents["ceo"].state, agents["ceo"].renewed_age) == ("healthy", 0.4)
    assert (agents["chro"].state, agents["chro"].renewed_age) == ("healthy", None)
