"""What ECHO starts, ECHO stops: the embedded Postgres of a state directory, and a
status that tells the truth about dead agents and unreachable databases.

These run the real `echoctl` in subprocesses, with no database URL: the embedded
server of the test's own state directory (under root it lives in
/var/lib/echo-embedded/<hash>, and the test purges it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from echo.config import Settings
from echo.embedded import EmbeddedPostgres
from tests.helpers import echoctl, org_processes

# A fresh embedded cluster (initdb, first start, migrations) and an organisation on it
# take a minute on a loaded 2-core machine; the default 120 s is too tight for that.
# They run alone (not beside the parallel workers): initdb and a first start load both cores.
pytestmark = [pytest.mark.timeout(300), pytest.mark.alone]


def _postgres_of(data_dir: Path) -> list[psutil.Process]:
    """Every live process whose command line names this cluster's data directory."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if str(data_dir) in " ".join(proc.info["cmdline"] or []) \
                    and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture
def embedded_settings(tmp_path: Path, namespace: str, agents_dir: Path) -> Iterator[Settings]:
    """Settings with no database URL (the embedded default); everything purged afterwards."""
    s = Settings(env="test", database_url=None, redis_url=None, namespace=namespace,
                 state_dir=tmp_path / "state", agents_dir=agents_dir,
                 console_port=0)  # never the default port another organisation may hold
    server = EmbeddedPostgres(s.state_dir / "postgres")
    yield s
    echoctl(s, "down", "--timeout", "30")
    for proc in org_processes(s):
        proc.kill()
    server.destroy()
    assert not server.root.exists()


def test_up_then_down_leaves_no_postgres_of_the_state_dir(embedded_settings: Settings) -> None:
    s = embedded_settings
    server = EmbeddedPostgres(s.state_dir / "postgres")
    started = echoctl(s, "up", "--roles", "ceo,cto", "--detach", timeout=180)
    assert started.returncode == 0, started.stderr
    pid = server.running_pid()
    assert pid is not None and _postgres_of(server.data_dir)

    shown = echoctl(s, "db", "status", "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)["server"]
    assert info["pid"] == pid and info["data_dir"] == str(server.data_dir)
    assert info["organisation_pid"] is not None
    assert any(c["application"].endswith(":cto") for c in info["clients"]), info
    refused = echoctl(s, "db", "stop")
    assert refused.returncode == 1 and "echoctl down" in refused.stderr
    assert server.running_pid() == pid

    stopped = echoctl(s, "down", "--timeout", "60", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped the embedded Postgres (pid {pid}" in stopped.stdout
    assert server.running_pid() is None
    assert _postgres_of(server.data_dir) == []
    assert org_processes(s) == []

    # A read-only command after `down` does not leave a server behind either.
    echoctl(s, "status")
    assert server.running_pid() is None and _postgres_of(server.data_dir) == []

    purged = echoctl(s, "db", "stop", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not server.root.exists() and not (s.state_dir / "postgres").exists()


def test_a_command_that_started_the_server_stops_it(embedded_settings: Settings) -> None:
    s = embedded_settings
    server = EmbeddedPostgres(s.state_dir / "postgres")
    migrated = echoctl(s, "db", "migrate", timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    assert server.exists() and server.running_pid() is None
    assert _postgres_of(server.data_dir) == []


def test_garbage_database_url_is_a_config_error_naming_the_setting(tmp_path: Path) -> None:
    s = Settings(env="test", state_dir=tmp_path / "state")
    done = echoctl(s, "status", ECHO_DATABASE_URL="garbage")
    assert done.returncode == 2, done.stderr
    assert "ECHO_DATABASE_URL" in done.stderr and "unavailable" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_status_with_an_unreachable_database_fails_and_names_it(tmp_path: Path) -> None:
    from echo.embedded import free_port

    s = Settings(env="test", state_dir=tmp_path / "state",
                 database_url=f"postgresql://echo:pa55word@127.0.0.1:{free_port()}/echo")
    done = echoctl(s, "status", ECHO_CONNECT_TIMEOUT="1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot be reached" in done.stdout and "127.0.0.1" in done.stdout
    assert "pa55word" not in done.stdout + done.stderr
    as_json = json.loads(echoctl(s, "status", "--json", ECHO_CONNECT_TIMEOUT="1").stdout)
    assert as_json["organisation"]["database_reachable"] is False and as_json["problems"]
