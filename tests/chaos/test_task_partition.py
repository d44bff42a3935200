"""A worker partitioned from the database while it runs a task (issue 19, fault 3).

Worker `a` reaches Postgres through a TCP proxy the test freezes (tests/proxy.py);
worker `b` reaches it directly. Once `a`'s task lease runs out, `b` rescues and runs
the task again. Each attempt's child writes its start and its end (pid, attempt,
monotonic time, which is one clock for every process of the host, and wall time) to
a file, so
the test reads the two attempts' intervals from what the children recorded:

- `a` must stop its run before its lease can pass to `b` (the owner's rule: it acts
  only while its monotonic clock is before t + task lease, t = when it sent its last
  renewal the database confirmed): the two intervals never overlap;
- a result `a` finished but could not store is not reported `completed`: its write
  is refused once `b` owns the task, and `a` says it dropped it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from echo.config import Settings
from echo.db import Database
from echo.runtime import Backoff
from echo.work import TaskQueue
from echo.work.executors import CommandExecutor
from echo.work.pool import ExecutorPool
from tests.helpers import wait_until
from tests.proxy import FreezableProxy, proxy_for, through

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]

LEASE = 4.0  # the task lease: long enough for a loaded machine's renewals, short for a test

#: One attempt of the task: notes its start, then (attempt 1) waits for the file named
#: by $RELEASE or (later attempts) ends at once; notes its end, on TERM too.
CHILD = r"""
import os, signal, sys, time
record, release = sys.argv[1], os.environ.get("RELEASE")
attempt = os.environ["ECHO_TASK_ATTEMPT"]
def note(what):
    with open(record, "a") as f:
        f.write(f"{what} {attempt} {os.getpid()} {time.monotonic()!r} {time.time()!r}\n")
def on_term(*_):
    note("stop")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
note("start")
if attempt == "1":
    while not (release and os.path.exists(release)):
        time.sleep(0.02)
note("stop")
"""


def intervals(record: Path, *, wall: bool = False) -> dict[int, tuple[int, float, float | None]]:
    """attempt -> (pid, start, stop or None) as the children wrote them, on the
    monotonic clock (or the wall clock, to compare with the database's)."""
    out: dict[int, tuple[int, float, float | None]] = {}
    for line in record.read_text().splitlines():
        what, attempt, pid, monotonic, wall_clock = line.split()
        at = wall_clock if wall else monotonic
        if what == "start":
            out[int(attempt)] = (int(pid), float(at), None)
        else:
            pid0, start, _ = out[int(attempt)]
            out[int(attempt)] = (pid0, start, float(at))
    return out


def started(record: Path, attempt: int) -> bool:
    return record.exists() and attempt in intervals(record)


def pool(s: Settings, database: Database, name: str) -> ExecutorPool:
    return ExecutorPool(s.work, database, {"command": CommandExecutor()}, concurrency=1,
                        lease_seconds=LEASE, worker_prefix=name, grace_seconds=1.0,
                        backoff=Backoff(initial=0.01, max=0.01, jitter=0.0))


@pytest.fixture
async def proxy(settings: Settings) -> AsyncIterator[FreezableProxy]:
    with proxy_for(settings.database_url or "") as made:
        yield made


async def test_a_partitioned_worker_stops_its_run_before_another_claims_the_task(
    settings: Settings, db: Database, proxy: FreezableProxy, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = settings.model_copy(update={"command_timeout": 2.0})
    record = tmp_path / "attempts"
    queue = TaskQueue(db)
    task = await queue.enqueue("sleeper", task_type="command", max_retries=3, payload={
        "argv": [sys.executable, "-c", CHILD, str(record)]})
    behind = s.database.model_copy(update={"database_url": through(s.database_url or "", proxy)})
    far = await Database.open(behind, min_size=1, max_size=2)
    a, b = pool(s, far, "a"), pool(s, db, "b")
    caplog.set_level(logging.INFO, logger="echo.work.pool")
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(a.run)
            await wait_until(lambda: started(record, 1), timeout=30)
            proxy.freeze()  # `a` is cut off from the database with its child running
            await tg.start(b.run)
            await wait_until(lambda: (intervals(record).get(2) or (0, 0, None))[2] is not None,
                             timeout=60)
            await wait_until(lambda: _status(db, task.task_id, "completed"), timeout=30)
            proxy.thaw()
            await wait_until(lambda: (intervals(record).get(1) or (0, 0, None))[2] is not None,
                             timeout=30)
            b.stop()
            a.stop()
    finally:
        proxy.thaw()
        await far.close()
    runs = intervals(record)
    (pid_a, _start_a, stop_a), (_pid_b, start_b, stop_b) = runs[1], runs[2]
    assert stop_a is not None and stop_b is not None
    assert stop_a < start_b, (
        f"attempt 1 ran until {stop_a:.3f}, attempt 2 started at {start_b:.3f}: "
        f"they overlapped for {stop_a - start_b:.3f} s")
    with pytest.raises(ProcessLookupError):
        os.killpg(pid_a, 0)  # the whole group is gone
    assert not _completed_logged(caplog, attempt=1)


async def test_a_result_it_could_not_store_is_not_reported_completed(
    settings: Settings, db: Database, proxy: FreezableProxy, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = settings.model_copy(update={"command_timeout": 2.0})
    record, go = tmp_path / "attempts", tmp_path / "go"
    queue = TaskQueue(db)
    task = await queue.enqueue("quick", task_type="command", max_retries=3, payload={
        "argv": [sys.executable, "-c", CHILD, str(record)], "env": {"RELEASE": str(go)}})
    behind = s.database.model_copy(update={"database_url": through(s.database_url or "", proxy)})
    far = await Database.open(behind, min_size=1, max_size=2)
    a, b = pool(s, far, "a"), pool(s, db, "b")
    caplog.set_level(logging.INFO, logger="echo.work.pool")
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(a.run)
            await wait_until(lambda: started(record, 1), timeout=30)
            proxy.freeze()
            go.touch()  # attempt 1 finishes while its worker cannot store the result
            await wait_until(lambda: (intervals(record).get(1) or (0, 0, None))[2] is not None,
                             timeout=30)
            await tg.start(b.run)
            await wait_until(lambda: _status(db, task.task_id, "completed"), timeout=60)
            proxy.thaw()
            await wait_until(lambda: a.metrics().lost >= 1, timeout=30)  # its write was refused
            b.stop()
            a.stop()
    finally:
        proxy.thaw()
        await far.close()
    runs = intervals(record)
    assert runs[1][2] is not None and runs[1][2] < runs[2][1]
    assert not _completed_logged(caplog, attempt=1), "worker a reported a result it dropped"
    assert _completed_logged(caplog, attempt=2)
    assert a.metrics().succeeded == 0 and b.metrics().succeeded == 1
    async with db.acquire() as conn:
        worker = await conn.fetchval("SELECT assigned_worker_id FROM agent_tasks WHERE task_id = $1",
                                     task.task_id)
    assert worker.startswith("b:")


async def _status(db: Database, task_id: int, status: str) -> bool:
    return (await TaskQueue(db).get(task_id))["status"] == status


def _completed_logged(caplog: pytest.LogCaptureFixture, *, attempt: int) -> bool:
    return any(getattr(r, "fields", {}).get("outcome") == "completed"
               and getattr(r, "fields", {}).get("attempt") == attempt for r in caplog.records)

