"""Restart intensity is each agent's own, and a node whose top supervisor gives up
restarts itself with backoff (OTP's heart) unless `up --no-heart` says not to.

Real `echoctl up` agent processes, killed with SIGKILL: six different agents at once
are six single failures, not one organisation-wide crash loop; one agent killed past
its own intensity is named with its real count, and then the node either restarts
itself (the same `up` process, every agent anew) or stops and stays down.
"""

from __future__ import annotations

import os
import signal

import pytest

from echo.config import Settings
from echo.org.node.state import OrgRecord, pid_alive, read_org
from tests.chaos.conftest import agent_pids, agent_restarts
from tests.helpers import ROLES, all_in, run_cli, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

TWO = ["ceo", "cto"]


def record_of(s: Settings) -> OrgRecord:
    record = read_org(s)
    assert record is not None
    return record


def running_again(s: Settings, role: str, old_pid: int | None) -> bool:
    """The agent runs as a new process, and the organisation has not stopped."""
    record = record_of(s)
    assert record.state not in ("failed", "stopped"), f"the organisation stopped: {record.failure}"
    rec = record.agents[role]
    return rec.state == "running" and rec.pid is not None and rec.pid != old_pid


async def test_six_agents_killed_within_five_seconds_all_come_back_and_the_node_stays_up(
    org_settings: Settings,
) -> None:
    s = org_settings
    started = await run_cli(s, "up", "--detach", "--no-console", timeout=120)  # 3 restarts in 5 s
    assert started.returncode == 0, started.stderr
    await wait_until(all_in(s, "healthy"), timeout=90, interval=0.1)
    before = agent_pids(s, ROLES)
    for pid in before.values():
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

    for role in ROLES:
        await wait_until(lambda role=role: running_again(s, role, before[role]), timeout=90, interval=0.1)
    await wait_until(all_in(s, "healthy"), timeout=90, interval=0.1)
    record = record_of(s)
    assert record.state == "running" and record.failure is None
    assert agent_restarts(s, ROLES) == dict.fromkeys(ROLES, 1)


async def crash_loop(s: Settings, role: str, kills: int) -> None:
    """Kill `role` `kills` times, each time once its restart is up."""
    for n in range(kills):
        pid = agent_pids(s, [role])[role]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        if n < kills - 1:
            await wait_until(lambda pid=pid: running_again(s, role, pid), timeout=90, interval=0.05)


async def test_an_agent_past_its_intensity_is_named_and_without_the_heart_the_node_stays_down(
    org_settings: Settings,
) -> None:
    s = org_settings
    started = await run_cli(s, "up", "--detach", "--no-console", "--no-heart", "--roles", ",".join(TWO),
                            "--max-restarts", "2", "--max-seconds", "120", timeout=120)
    assert started.returncode == 0, started.stderr
    await wait_until(all_in(s, "healthy", TWO), timeout=90, interval=0.1)
    up_pid = record_of(s).pid

    await crash_loop(s, "cto", kills=3)

    await wait_until(lambda: record_of(s).state == "failed", timeout=90, interval=0.1)
    failure = record_of(s).failure or ""
    assert failure.startswith("agent cto failed 3 time(s) within 120 s (limit 2 restarts in 120 s)"), failure
    assert "stopped" in failure
    await wait_until(lambda: not pid_alive(up_pid), timeout=60, interval=0.1)  # down, and stays down
    shown = await run_cli(s, "status")
    assert shown.returncode == 1 and "agent cto failed 3 time(s)" in shown.stdout, shown.stdout


async def test_an_agent_past_its_intensity_makes_the_node_restart_itself(org_settings: Settings) -> None:
    s = org_settings
    started = await run_cli(s, "up", "--detach", "--no-console", "--roles", ",".join(TWO),
                            "--max-restarts", "2", "--max-seconds", "120", timeout=120)
    assert started.returncode == 0, started.stderr
    await wait_until(all_in(s, "healthy", TWO), timeout=90, interval=0.1)
    up_pid = record_of(s).pid
    ceo_before = agent_pids(s, ["ceo"])["ceo"]

    await crash_loop(s, "cto", kills=3)

    await wait_until(lambda: record_of(s).node_restarts == 1, timeout=90, interval=0.05)
    failure = record_of(s).last_node_restart or ""
    assert failure.startswith("agent cto failed 3 time(s) within 120 s (limit 2 restarts in 120 s)"), failure
    assert "the node restarts itself in 1 s" in failure

    # The same `up` starts every agent anew, the bystander too, and runs on.
    await wait_until(lambda: record_of(s).state == "running", timeout=90, interval=0.1)
    await wait_until(lambda: running_again(s, "ceo", ceo_before), timeout=90, interval=0.1)
    await wait_until(all_in(s, "healthy", TWO), timeout=90, interval=0.1)
    record = record_of(s)
    assert record.pid == up_pid and pid_alive(up_pid)
    assert record.node_restarts == 1
