"""Real `python -m echo worker` processes sharing one database."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from echo.config import Settings
from echo.db import Database
from echo.work import NewTask, TaskQueue
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[3]


class Workers:
    """Starts worker processes and makes sure none outlives the test."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.env = {**os.environ, **settings.child_env(), "ECHO_LOG_LEVEL": "WARNING"}
        self.env.pop("ECHO_ENV", None)
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "echo", "worker", *args], cwd=ROOT,
                                env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def log(self, i: int) -> str:
        return (self.tmp_path / f"worker-{i}.log").read_text(errors="replace")

    async def ready(self, i: int, timeout: float = 20) -> None:
        def up() -> bool:
            assert self.procs[i].poll() is None, self.log(i)
            return " ready: " in self.log(i)

        await wait_until(up, timeout=timeout, interval=0.05)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(settings, tmp_path)
    yield w
    w.stop_all()


async def until(q: TaskQueue, condition: Callable[[dict[str, int]], bool],
                timeout: float) -> dict[str, int]:
    async def holds() -> bool:
        return bool(condition(await q.counts()))

    await wait_until(holds, timeout=timeout, interval=0.1)
    return await q.counts()


async def test_four_workers_execute_2000_tasks_exactly_once(
    settings: Settings, db: Database, workers: Workers
) -> None:
    for _ in range(4):
        workers.start("--concurrency", "32", "--executor", "noop")
    for i in range(4):
        await workers.ready(i)
    q = TaskQueue(db)
    for start in range(0, 2000, 200):
        await q.enqueue_many([NewTask(f"t{i}", task_type="noop") for i in range(start, start + 200)])
    await until(q, lambda c: c["completed"] == 2000, timeout=60)
    for proc in workers.procs:
        proc.send_signal(signal.SIGTERM)
    for i, proc in enumerate(workers.procs):
        assert proc.wait(timeout=20) == 0, workers.log(i)
    async with db.acquire() as conn:
        per_task = await conn.fetch(
            "SELECT subject_id, count(*) FILTER (WHERE action = 'task.claimed') AS claims, "
            "count(*) FILTER (WHERE action = 'task.completed') AS completions "
            "FROM agent_actions WHERE subject_type = 'task' GROUP BY subject_id")
        by_worker = await conn.fetch(
            "SELECT split_part(assigned_worker_id, ':', 2) AS pid, count(*) AS n "
            "FROM agent_tasks GROUP BY 1")
    assert len(per_task) == 2000
    assert {(r["claims"], r["completions"]) for r in per_task} == {(1, 1)}
    assert len(by_worker) >= 2, by_worker  # the work was shared, not one worker's
    assert sum(r["n"] for r in by_worker) == 2000


async def test_a_worker_killed_mid_task_has_its_task_rescued_by_another(
    settings: Settings, db: Database, workers: Workers
) -> None:
    # First attempt hangs (as if the worker were stuck in it); the rescued one finishes.
    script = ("import os, time\n"
              "if os.environ['ECHO_TASK_ATTEMPT'] == '1':\n    time.sleep(120)\n"
              "print('done on attempt', os.environ['ECHO_TASK_ATTEMPT'])")
    q = TaskQueue(db)
    made = await q.enqueue("rescue me", task_type="command", max_retries=3,
                           payload={"argv": [sys.executable, "-c", script]})
    victim = workers.start("--executor", "command", "--lease", "1")
    async def running() -> bool:
        return bool((await q.get(made.task_id))["status"] == "running")

    await wait_until(running, timeout=20, interval=0.05)
    row = await q.get(made.task_id)
    assert f":{victim.pid}:" in row["assigned_worker_id"]
    await wait_until(lambda: bool(_task_children(victim.pid, made.task_id)), timeout=20)
    orphans = _task_children(victim.pid, made.task_id)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    workers.start("--executor", "command", "--lease", "1")
    try:
        await until(q, lambda c: c["completed"] == 1, timeout=30)
    finally:
        _kill_orphans(orphans)
    row = await q.get(made.task_id)
    assert row["retry_count"] == 1 and row["result"]["stdout"].strip() == "done on attempt 2"
    actions = [h["action"] for h in await q.history(made.task_id)]
    assert actions == ["task.enqueued", "task.claimed", "task.retry_scheduled",
                       "task.claimed", "task.completed"]


def _gone(pid: int) -> bool:
    """Ended: no such process, or a zombie its new parent has not reaped yet."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
async def test_a_sigkilled_workers_child_dies_with_it(
    settings: Settings, db: Database, workers: Workers
) -> None:
    q = TaskQueue(db)
    made = await q.enqueue("sleep 1000", task_type="command", max_retries=0)
    victim = workers.start("--executor", "command")

    seen: list[psutil.Process] = []

    def task_child() -> psutil.Process | None:
        found = _task_children(victim.pid, made.task_id)
        seen.extend(found)
        return found[0] if found else None

    try:
        await wait_until(lambda: task_child() is not None, timeout=20)
        child = task_child()
        assert child is not None and child.name() == "sleep"
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        # No SIGTERM, no drain, no `finally` ran in the worker: only the kernel can stop
        # the child now, and it must, or `claude` would keep spending tokens.
        await wait_until(lambda: _gone(child.pid), timeout=10)
    finally:
        _kill_orphans(seen)


def _task_children(worker_pid: int, task_id: int) -> list[psutil.Process]:
    """The children worker `worker_pid` runs for task `task_id`."""
    found = []
    for child in psutil.Process(worker_pid).children():
        with contextlib.suppress(psutil.Error):
            if child.environ().get("ECHO_TASK_ID") == str(task_id):
                found.append(child)
    return found


def _kill_orphans(children: list[psutil.Process]) -> None:
    """A SIGKILLed worker cannot kill its child; the test cleans up after it. Only the
    children it saw: every namespace numbers its tasks from 1, so another test's task
    child has the same ECHO_TASK_ID (killing by it once killed a neighbour's run).
    psutil refuses a pid that another process took since."""
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


async def test_worker_rejects_bad_input_and_a_dead_database_in_one_line(
    settings: Settings, tmp_path: Path
) -> None:
    env = {**os.environ, **settings.child_env()}
    env.pop("ECHO_ENV", None)

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "echo", *args], cwd=ROOT,
                              env={**env, **extra}, capture_output=True, text=True, timeout=30)

    bad_role = run("worker", "--roles", "nobody")
    assert bad_role.returncode == 2 and "unknown role" in bad_role.stderr
    no_claude = run("worker", "--executor", "claude", ECHO_CLAUDE_BIN="/nonexistent/claude")
    assert no_claude.returncode == 1 and "ECHO_CLAUDE_BIN" in no_claude.stderr
    assert len(no_claude.stderr.strip().splitlines()) == 1
    down = run("tasks", "list", ECHO_DATABASE_URL="postgresql://root@127.0.0.1:1/x",
               ECHO_CONNECT_TIMEOUT="1")
    assert down.returncode == 1 and len(down.stderr.strip().splitlines()) == 1
    assert "unavailable" in down.stderr
