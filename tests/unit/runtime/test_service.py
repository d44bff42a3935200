"""Service: anyio-style functions as supervised children."""

from __future__ import annotations

import anyio
import pytest
from anyio.abc import TaskStatus

from echo.runtime import NORMAL, ChildSpec, Service, StartError, Supervisor


async def test_started_when_the_function_says_so_and_stopped_by_cancellation() -> None:
    order: list[str] = []
    release = anyio.Event()

    async def serve(label: str, *, task_status: TaskStatus[str]) -> None:
        order.append(f"init {label}")
        await release.wait() if label == "never" else None
        task_status.started(f"{label} up")
        try:
            await anyio.sleep_forever()
        finally:
            order.append(f"cleanup {label}")

    service = Service(serve, "a", name="a")
    await service.start()
    assert service.value == "a up" and service.alive
    assert await service.stop() == "shutdown"
    assert order == ["init a", "cleanup a"]


async def test_return_is_normal_and_raise_is_a_crash_the_supervisor_restarts() -> None:
    runs: list[int] = []
    restarted = anyio.Event()

    async def flaky(*, task_status: TaskStatus[None]) -> None:
        runs.append(1)
        task_status.started()
        if len(runs) == 1:
            raise RuntimeError("boom")
        restarted.set()
        await anyio.sleep_forever()

    async with Supervisor([ChildSpec("flaky", lambda: Service(flaky))]) as sup:
        with anyio.fail_after(5):
            await restarted.wait()
        [child] = await sup.which_children()
        assert child.process is not None and child.process.alive

    async def done(*, task_status: TaskStatus[None]) -> None:
        task_status.started()

    finished = Service(done)
    await finished.start()
    assert await finished.wait() == NORMAL


async def test_failing_before_started_fails_the_start() -> None:
    async def broken(*, task_status: TaskStatus[None]) -> None:
        raise ValueError("cannot bind")

    with pytest.raises(StartError, match="cannot bind"):
        await Service(broken, name="broken").start()


async def test_graceful_stop_lets_the_function_finish() -> None:
    stopping = anyio.Event()
    finished: list[str] = []

    async def pool(*, task_status: TaskStatus[None]) -> None:
        task_status.started()
        await stopping.wait()
        finished.append("drained")  # a cancelled function would never get here

    service = Service(pool, graceful=stopping.set)
    await service.start()
    assert await service.stop("shutdown", 5) == "shutdown"
    assert finished == ["drained"]
