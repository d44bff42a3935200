"""Task: async_ / await_ / yield_ / shutdown, and tasks under a supervisor."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from echo.runtime import KILLED, ChildSpec, Supervisor, Task, TaskTimeout

from .helpers import Crash

pytestmark = pytest.mark.anyio


async def add(a: int, b: int) -> int:
    await anyio.sleep(0)
    return a + b


async def fail() -> None:
    raise Crash("task")


async def test_await_returns_the_result_or_raises_the_crash() -> None:
    assert await Task.async_(add, 2, 3).await_() == 5
    task = Task.async_(fail)
    with pytest.raises(Crash, match="task"):
        await task.await_()
    assert isinstance(task.exit_reason, Crash)


async def test_await_timeout_shuts_the_task_down() -> None:
    cleaned = anyio.Event()

    async def forever() -> None:
        try:
            await anyio.Event().wait()
        finally:
            cleaned.set()

    task = Task.async_(forever)
    with pytest.raises(TaskTimeout):
        await task.await_(timeout=0.02)
    assert not task.alive and task.exit_reason == KILLED
    assert cleaned.is_set()


async def test_yield_returns_none_on_timeout_and_the_task_keeps_running() -> None:
    gate = anyio.Event()

    async def gated() -> str:
        await gate.wait()
        return "done"

    task = Task.async_(gated)
    assert await task.yield_(timeout=0.01) is None
    assert task.alive
    gate.set()
    assert await task.yield_(timeout=2) == "done"


async def test_shutdown_cancels_a_running_task_or_returns_a_finished_result() -> None:
    running = Task.async_(anyio.sleep, 10)
    assert await running.shutdown() is None
    assert running.exit_reason == "shutdown"

    finished = Task.async_(add, 1, 1)
    await finished.wait()
    assert await finished.shutdown("brutal_kill") == 2


async def test_a_transient_task_under_a_supervisor_is_restarted_after_a_crash() -> None:
    runs: list[Any] = []
    done = anyio.Event()

    async def flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise Crash("first run")
        done.set()

    async with Supervisor([ChildSpec("t", lambda: Task(flaky), restart="transient")]):
        with anyio.fail_after(2):
            await done.wait()
    assert len(runs) == 2
