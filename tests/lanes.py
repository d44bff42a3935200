"""The alone phase's lanes: which `alone` test runs in which lane, beside which others.

`make test` runs the alone tests (tests/conftest.py, ALONE_MARKERS) after the parallel
phase, in lanes: one pytest-xdist group each, on a worker each (tests/suite.py), each
lane one test after another. Every alone test starts what it breaks (its own Postgres,
Redis or Sentinel on a free port, its own organisation in its own namespace, its own
hosts inside network namespaces), so a test of one lane never touches another lane's
servers or agents; what they share is the CPU. The lanes are cut so that a lane's
tests are one kind of load and the longest lane is short:

- `alone-e2e`: the claude CLI against a fake API on a port of its own (bursts of
  Node start-up, then waiting on the fake's stalls and on clocks: a decider's
  timeout, a usage limit's reset).
- `alone-jepsen`: the Jepsen run (its own hosts and faults in network namespaces,
  mostly waiting on its timeline) and Chromium (the dashboard's pages).
- `alone-servers`: what stops, fails over or restarts a server of its own and waits
  for the recovery (Postgres failover and restart, Redis outage and Sentinel, the
  pool's outage, the embedded lifecycle) and the wheel build.
- `alone`: the rest, what kills, pauses or partitions agents and workers (leases,
  takeovers, supervision, kill storms, the worker race).

Measured on the 2-core machine (docs/benchmarks.md): in two lanes the phase took 301 s,
its longest lane 300 s of test time.
"""

from __future__ import annotations

#: Lane name -> the node-id prefixes it holds; an alone test under none is in `alone`.
LANES: dict[str, tuple[str, ...]] = {
    "alone-e2e": ("tests/e2e/",),
    "alone-jepsen": ("tests/jepsen/", "tests/browser/"),
    "alone-servers": (
        "tests/chaos/test_postgres_failover.py",
        "tests/chaos/test_postgres_restart.py",
        "tests/chaos/test_redis_outage.py",
        "tests/chaos/test_redis_sentinel.py",
        "tests/integration/work/test_outage.py",
        "tests/integration/org/test_lifecycle.py",
        "tests/integration/test_package.py",
    ),
}
#: The lane of every other alone test.
REST = "alone"
#: How many lanes, so how many workers the alone phase takes.
COUNT = len(LANES) + 1


def lane_of(nodeid: str) -> str:
    """The lane (an xdist group name) of the alone test `nodeid`."""
    for lane, prefixes in LANES.items():
        if nodeid.startswith(prefixes):
            return lane
    return REST
