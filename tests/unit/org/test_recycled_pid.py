"""A recorded pid the kernel has since given to another process (pids wrap at 32768 on a
busy machine within minutes) is not the organisation: `down` must not SIGTERM that
stranger, which may be a Postgres backend or postmaster of someone else's (the two
"fail under load" tests of issue 18: "terminating connection due to administrator
command", and an embedded server's pid that changed), and `db stop` is not refused
because of it."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from echo.config import Settings
from echo.org.node.state import AgentRecord, OrgRecord, live_agents, read_org, running_org, write_org
from tests.helpers import echoctl
from tests.unit.org.test_orphans import dead_pid


def test_a_pid_now_held_by_a_later_process_is_no_running_organisation(tmp_path: Path) -> None:
    s = Settings(env="test", state_dir=tmp_path / "state", namespace="t_recycled",
                 database_url="postgresql://nobody@127.0.0.1:1/none", connect_timeout=0.2)
    # The organisation was recorded a minute ago; its pid now belongs to a process
    # started after that (as a recycled pid does).
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        a_minute_ago = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        write_org(s, OrgRecord(pid=stranger.pid, namespace=s.namespace, state="running",
                               started_at=a_minute_ago))
        assert running_org(s) is None

        done = echoctl(s, "down", "--timeout", "5")
        assert done.returncode == 0, done.stderr
        assert "no organisation is running" in done.stdout
        assert stranger.poll() is None, "down signalled a process that is not the organisation"
    finally:
        stranger.kill()
        stranger.wait()


def test_the_recorded_process_itself_is_the_running_organisation(tmp_path: Path) -> None:
    s = Settings(env="test", state_dir=tmp_path / "state", namespace="t_recycled")
    supervisor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_org(s, OrgRecord(pid=supervisor.pid, namespace=s.namespace, state="running"))
        found = running_org(s)
        assert found is not None and found.pid == supervisor.pid
    finally:
        supervisor.kill()
        supervisor.wait()


def test_an_agent_pid_now_held_by_a_later_agent_of_someone_else_is_not_stopped(tmp_path: Path) -> None:
    s = Settings(env="test", state_dir=tmp_path / "state", namespace="t_recycled",
                 database_url="postgresql://nobody@127.0.0.1:1/none", connect_timeout=0.2)
    # Looks like an agent (`echo.org` on its command line) but started after the record.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "echo.org", "cto"])
    try:
        a_minute_ago = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        write_org(s, OrgRecord(pid=dead_pid(), namespace=s.namespace, state="running",
                               agents={"cto": AgentRecord(role="cto", state="running", pid=other.pid,
                                                          started_at=a_minute_ago)}))
        assert live_agents(s, read_org(s)) == []
        done = echoctl(s, "down", "--timeout", "5")
        assert done.returncode == 0, done.stderr
        assert other.poll() is None, "down signalled another organisation's agent"
    finally:
        other.kill()
        other.wait()
