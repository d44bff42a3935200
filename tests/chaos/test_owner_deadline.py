"""A role owner partitioned from the database stops everything by its deadline (issue
19, fault 2).

The owner (node a) reaches Postgres through a TCP proxy the test freezes
(tests/proxy.py); the standby (node b) reaches it directly. The owner runs a task whose
child sleeps until it is told to stop. Once frozen, the owner's renewals go unanswered;
its rule (echo/org/leases.py) is that it acts only while its monotonic clock is before
t + lease_seconds, t = the send time of its last renewal the database confirmed. So by
that deadline, which it logs, its tree must be down and the child's process group dead,
and the standby takes over only after it. Every time compared here was recorded by
the process it is about, on the monotonic clock every process of a host shares:

    child's end  <=  owner's tree down  <=  owner's deadline  <=  standby's takeover

Then the task runs again on the new owner, and the old one, thawed, stands by with
nothing of its tree running.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from echo import db as dbmod
from echo.config import Settings
from echo.logs import parse_line
from echo.work import TaskQueue
from tests.chaos.test_leases import _has, _one_active
from tests.chaos.test_task_partition import CHILD, intervals, started
from tests.helpers import cli_env, wait_until
from tests.proxy import FreezableProxy, proxy_for, through

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

#: The loggers of the role's tree (echo/org/agent/tree.py): none may speak once it is down.
TREE_LOGGERS = ("echo.bus", "echo.work", "echo.listener", "echo.org.workflow",
                "echo.org.health", "echo.org.agent.deciders")


@pytest.fixture
def proxy(org_settings: Settings) -> Iterator[FreezableProxy]:
    with proxy_for(org_settings.database_url or "") as made:
        yield made


def agent(s: Settings, node: str, log: Path) -> subprocess.Popen[bytes]:
    """`python -m echo agent cto --autonomous`, its log (stderr) in `log`."""
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "echo", "agent", "cto", "--autonomous"],
            env=cli_env(s, ECHO_NODE=node), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=sink)


def events(log: Path) -> list[dict[str, Any]]:
    return [parse_line(line) for line in log.read_text(errors="replace").splitlines()]


def field(log: Path, outcome: str) -> list[dict[str, Any]]:
    """The keeper's and the agent's lines with `event=outcome` (echo/org/agent/lease_keeper.py,
    echo/org/agent/process.py)."""
    return [e for e in events(log) if e["fields"].get("event") == outcome]


async def test_a_partitioned_owner_is_stopped_by_its_deadline_before_the_takeover(
    org_settings: Settings, proxy: FreezableProxy, tmp_path: Path,
) -> None:
    s = org_settings.model_copy(update={
        "lease_seconds": 4.0, "lease_renew_interval": 0.5, "command_timeout": 2.0,
        "task_lease_seconds": 8.0})  # the role's deadline comes first
    far = s.model_copy(update={"database_url": through(s.database_url or "", proxy)})
    record, log_a, log_b = tmp_path / "attempts", tmp_path / "a.log", tmp_path / "b.log"
    a = agent(far, "a", log_a)
    b: subprocess.Popen[bytes] | None = None
    try:
        await wait_until(lambda: _one_active(s, "cto", "a", "healthy"), timeout=90, interval=0.1)
        b = agent(s, "b", log_b)
        await wait_until(lambda: _has(s, "cto", "b", "standby"), timeout=90, interval=0.1)
        queue_db = await dbmod.Database.open(s.database)
        try:
            task = await TaskQueue(queue_db).enqueue(
                "sleeper", task_type="command", role="cto", max_retries=3,
                payload={"argv": [sys.executable, "-c", CHILD, str(record)]})
            await wait_until(lambda: started(record, 1), timeout=60, interval=0.05)

            proxy.freeze()  # the owner is cut off from the database, its child running
            await wait_until(lambda: _one_active(s, "cto", "b", "healthy"), timeout=60,
                             interval=0.1)
            async with queue_db.acquire() as conn:  # the database's clock: the host's
                taken_at = await conn.fetchval(
                    "SELECT extract(epoch FROM acquired_at) FROM role_leases WHERE role = 'cto'")
            _pid, _start, stop_wall = intervals(record, wall=True)[1]
            assert stop_wall is not None and stop_wall < float(taken_at), (
                f"the deposed owner's child ran on past the takeover (it stopped at {stop_wall}, "
                f"the standby took the role at {float(taken_at)})")
            pid, _start, stop = intervals(record)[1]
            takeover = float(field(log_b, "acquired")[-1]["fields"]["at"])
            halting, halted = field(log_a, "halting"), field(log_a, "halted")
            assert halting and halted, log_a.read_text()[-3000:]
            deadline = float(halting[0]["fields"]["deadline"])
            down = float(halted[0]["fields"]["at"])
            assert stop <= down <= deadline <= takeover, (stop, down, deadline, takeover)
            with pytest.raises(ProcessLookupError):
                os.killpg(pid, 0)  # nothing of the child's group is left

            # The task goes back to the queue and runs again on the new owner.
            async def done() -> bool:
                row = await TaskQueue(queue_db).get(task.task_id)
                return bool(row["status"] == "completed")

            await wait_until(done, timeout=60, interval=0.1)
            assert intervals(record)[2][1] > deadline
        finally:
            await queue_db.close()

        proxy.thaw()  # the old owner hears from the database again: it stands by
        await wait_until(lambda: _standby_pid(s, a.pid), timeout=60, interval=0.1)
        assert await _one_active(s, "cto", "b", "healthy")
        lines = events(log_a)
        after = lines[[e["raw"] for e in lines].index(halted[0]["raw"]):]
        spoke = [e["raw"] for e in after if str(e.get("logger", "")).startswith(TREE_LOGGERS)]
        assert not spoke, f"the deposed owner's tree still ran: {spoke[:5]}"
        assert a.poll() is None  # it stands by rather than dying
    finally:
        proxy.thaw()
        for proc in (a, *([b] if b else [])):
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


async def _standby_pid(s: Settings, pid: int) -> bool:
    from echo.org.leases import agent_processes

    return any(e["pid"] == pid and e["state"] == "standby"
               for e in await agent_processes(s.database, s.leases, stale_after=s.lease_seconds))
