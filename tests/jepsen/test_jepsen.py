"""The Jepsen harness end to end, in its short form (part of `make test`).

One real run (about 70 s of workload and nemesis on two nodes, a database host and a
client, all in network namespaces made by the run) must be valid; the three planted
violations, planted into that run's record, must each be found and named; and a run
interrupted with Ctrl-C must leave no namespace, process or file behind.

Where the harness cannot run (not root, no network namespaces) it says why in one
line and these tests skip; a missing install step (`make jepsen-setup`) fails them
under ECHO_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import unavailable
from tests.jepsen import checker, hosts

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]
REPO = Path(__file__).resolve().parents[2]
DURATION = 70
_HOSTS_UP = re.compile(r"hosts up \(run (?P<id>[0-9a-f]+), files in (?P<root>\S+)\)")


@pytest.fixture(scope="module")
def runnable() -> None:
    reason = hosts.cannot_run()
    if reason is not None:
        if "make jepsen-setup" in reason:
            unavailable(reason)
        pytest.skip(reason)


def _harness(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.jepsen.run", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})


def _last_json(stdout: str) -> dict[str, Any]:
    line: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return line


@pytest.fixture(scope="module")
def recorded(runnable: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, str]:
    out = tmp_path_factory.mktemp("jepsen") / "run"
    proc = _harness("--duration", str(DURATION), "--seed", "19", "--out", str(out), "--drain", "90")
    stdout, stderr = proc.communicate(timeout=540)
    return out, stdout, stderr, str(proc.returncode)


def test_a_short_run_under_faults_is_valid_and_leaves_nothing(
        recorded: tuple[Path, str, str, str]) -> None:
    out, stdout, stderr, rc = recorded
    assert rc == "0", f"exit {rc}\n{stdout[-3000:]}\n{stderr[-2000:]}"
    result = _last_json(stdout)
    assert result["valid"] is True, stdout[-3000:]
    assert result["operations"]["ok"] >= DURATION  # about three a second; the floor is loose
    assert result["faults"]["total"] >= 4
    assert set(result["violations"]) == set(checker.VIOLATIONS)
    assert (out / "timeline.png").stat().st_size > 0
    up = _HOSTS_UP.search(stderr)
    assert up is not None, stderr
    assert hosts.leftover_namespaces(up["id"]) == []
    assert not Path(up["root"]).exists()


@pytest.mark.parametrize("kind", checker.PLANTS)
def test_each_planted_violation_is_found(recorded: tuple[Path, str, str, str], kind: str,
                                         tmp_path: Path) -> None:
    out, _stdout, _stderr, rc = recorded
    if not (out / "meta.json").exists():
        pytest.fail(f"the run recorded nothing (exit {rc})")
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    planted = subprocess.run([sys.executable, "-m", "tests.jepsen.checker", str(copy), "--plant", kind],
                             cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert planted.returncode == 1, planted.stdout[-2000:] + planted.stderr[-1000:]
    result = _last_json(planted.stdout)
    assert result["valid"] is False
    assert result["violations"][kind] >= 1
    assert f"violation {kind}:" in planted.stdout


def test_ctrl_c_tears_everything_down(runnable: None, tmp_path: Path) -> None:
    proc = _harness("--duration", "300", "--out", str(tmp_path / "run"))
    assert proc.stderr is not None
    seen = ""
    pids: list[int] = []
    deadline = time.monotonic() + 240
    while "every role owned" not in seen and time.monotonic() < deadline and proc.poll() is None:
        seen += proc.stderr.readline()
    up = _HOSTS_UP.search(seen)
    assert up is not None and "every role owned" in seen, seen
    for ns in hosts.leftover_namespaces(up["id"]):
        pids += hosts.Cluster.pids_in(ns)
    assert pids  # Postgres, Redis, the nodes' agents and workers, the workload
    started = {pid: _started_at(pid) for pid in pids}
    proc.send_signal(signal.SIGINT)
    _stdout, rest = proc.communicate(timeout=120)
    assert proc.returncode == 1, seen + rest
    assert hosts.leftover_namespaces(up["id"]) == []
    assert not Path(up["root"]).exists()
    # the same processes, not others that got a freed pid (the suite starts many)
    alive = [p for p in pids if started[p] is not None and _started_at(p) == started[p]]
    assert alive == [], f"left running: {alive}"


def _started_at(pid: int) -> float | None:
    """When process `pid` started, which tells it from a later one with its pid; None
    once it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None
