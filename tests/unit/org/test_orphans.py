"""Agents that outlived their `echoctl up` (a platform without the death signal, or a
stranger's kill): `status` never calls the organisation stopped while one lives, and
`down` stops them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from echo.config import Settings
from echo.org.node.state import AgentRecord, OrgRecord, write_org
from echo.org.status import collect_status
from tests.helpers import echoctl


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_status_and_down_see_agents_whose_supervisor_is_gone(tmp_path: Path) -> None:
    s = Settings(env="test", state_dir=tmp_path / "state", namespace="t_orphans",
                 database_url="postgresql://nobody@127.0.0.1:1/none", connect_timeout=0.2)
    # A process that looks like an agent (`... echo.org ...` on its command line).
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "echo.org", "cto"])
    try:
        write_org(s, OrgRecord(pid=dead_pid(), namespace=s.namespace, state="running",
                               agents={"cto": AgentRecord(role="cto", state="running", pid=orphan.pid)}))
        info = await collect_status(s, remote=False)
        assert info.organisation.state == "supervisor gone, 1 agent(s) alive"
        assert {a.role: a.pid for a in info.agents}["cto"] == orphan.pid

        stopped = echoctl(s, "down", "--timeout", "20")
        assert stopped.returncode == 0, stopped.stderr
        assert orphan.wait(timeout=20) is not None
        info = await collect_status(s, remote=False)
        assert info.organisation.state == "stopped"
    finally:
        if orphan.poll() is None:
            orphan.kill()
        orphan.wait()


def test_a_dead_process_of_this_host_reads_down_others_are_left_alone() -> None:
    from echo.org.status import AgentProcessStatus, mark_gone

    def row(host: str, pid: int, state: str = "unresponsive") -> AgentProcessStatus:
        return AgentProcessStatus(role="cto", node="n", host=host, pid=pid, state=state,
                                  active=False, heartbeat_age=9.7)

    rows = [row("here", 1), row("here", 2, "healthy"), row("elsewhere", 3)]
    shown = mark_gone(rows, "here", lambda pid: pid == 2)
    assert [r.state for r in shown] == ["down", "healthy", "unresponsive"]
