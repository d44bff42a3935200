"""Runtime benchmarks: each figure beside the same work done with bare asyncio.

Prints one JSON line per figure. The baseline is measured in the same run, so the
ratio is the figure that counts (absolute numbers vary with the machine). Targets on
a 2-core machine: call >= 60 % of a bare Queue+Future round trip, restart median
< 1 ms, 10,000 actors spawned (and stopped) in < 1 s.

    python bench/runtime.py [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

from echo.runtime import Actor, ChildSpec, Supervisor

QUICK = "--quick" in sys.argv
CALLS = 20_000 if QUICK else 100_000
CASTS = 50_000 if QUICK else 300_000
RESTARTS = 500 if QUICK else 3_000
ACTORS = 10_000
REPEATS = 3


def emit(figure: str, value: float, unit: str, baseline: str, baseline_value: float) -> None:
    ratio = value / baseline_value if baseline_value else None
    print(
        json.dumps(
            {
                "bench": "runtime",
                "figure": figure,
                "value": round(value, 6),
                "unit": unit,
                "baseline": baseline,
                "baseline_value": round(baseline_value, 6),
                "ratio": round(ratio, 3) if ratio is not None else None,
            }
        ),
        flush=True,
    )


async def best_of(fn: Callable[[], Awaitable[float]], higher_is_better: bool = True) -> float:
    results = [await fn() for _ in range(REPEATS)]
    return max(results) if higher_is_better else min(results)


# -- actors under test ------------------------------------------------------------------


class Echo(Actor):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def handle_call(self, request: Any) -> Any:
        return request

    async def handle_cast(self, message: Any) -> None:
        self.count += 1


class Crasher(Actor):
    started: list[float] = []
    restarted: asyncio.Event | None = None

    async def init(self) -> None:
        Crasher.started.append(time.perf_counter())
        if Crasher.restarted is not None:
            Crasher.restarted.set()

    async def handle_cast(self, message: Any) -> None:
        raise RuntimeError("crash on purpose")


# -- call -------------------------------------------------------------------------------


async def actor_calls() -> float:
    echo = await Echo().start()
    call = echo.call
    t0 = time.perf_counter()
    for i in range(CALLS):
        await call(i)
    elapsed = time.perf_counter() - t0
    await echo.stop()
    return CALLS / elapsed


async def bare_calls() -> float:
    queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] = asyncio.Queue()

    async def server() -> None:
        while True:
            request, reply = await queue.get()
            reply.set_result(request)

    task = asyncio.create_task(server())
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    for i in range(CALLS):
        reply = loop.create_future()
        queue.put_nowait((i, reply))
        await reply
    elapsed = time.perf_counter() - t0
    task.cancel()
    return CALLS / elapsed


# -- cast -------------------------------------------------------------------------------


async def actor_casts() -> float:
    echo = await Echo().start()
    cast = echo.cast
    t0 = time.perf_counter()
    for i in range(CASTS):
        cast(i)
    await echo.call("flush", timeout=None)
    elapsed = time.perf_counter() - t0
    assert echo.count == CASTS
    await echo.stop()
    return CASTS / elapsed


async def bare_casts() -> float:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    done = asyncio.get_running_loop().create_future()

    async def consumer() -> None:
        count = 0
        while True:
            item = await queue.get()
            if item is None:
                done.set_result(count)
                return
            count += 1

    task = asyncio.create_task(consumer())
    t0 = time.perf_counter()
    for i in range(CASTS):
        queue.put_nowait(i)
    queue.put_nowait(None)
    await done
    elapsed = time.perf_counter() - t0
    await task
    return CASTS / elapsed


# -- restart latency --------------------------------------------------------------------


async def supervisor_restarts() -> list[float]:
    Crasher.started.clear()
    restarted = Crasher.restarted = asyncio.Event()
    sup = Supervisor([ChildSpec("c", Crasher)], max_restarts=10**9, max_seconds=1)
    await sup.start()
    latencies = []
    for _ in range(RESTARTS):
        child = (await sup.which_children())[0].process
        assert isinstance(child, Crasher)
        restarted.clear()
        t0 = time.perf_counter()
        child.cast("crash")
        await restarted.wait()
        latencies.append(Crasher.started[-1] - t0)
    await sup.stop()
    return latencies


async def bare_restarts() -> list[float]:
    started: list[float] = []
    crash = asyncio.Event()
    restarted = asyncio.Event()

    async def worker() -> None:
        started.append(time.perf_counter())
        restarted.set()
        await crash.wait()
        raise RuntimeError("crash on purpose")

    async def watchdog() -> None:
        while True:
            task = asyncio.create_task(worker())
            with contextlib.suppress(RuntimeError):
                await task

    guard = asyncio.create_task(watchdog())
    await asyncio.sleep(0)
    latencies = []
    for _ in range(RESTARTS):
        restarted.clear()
        t0 = time.perf_counter()
        crash.set()
        await restarted.wait()
        crash.clear()
        latencies.append(started[-1] - t0)
    guard.cancel()
    return latencies


# -- spawn and stop ---------------------------------------------------------------------


async def actor_spawn_stop() -> float:
    t0 = time.perf_counter()
    actors = [await Echo().start() for _ in range(ACTORS)]
    for actor in actors:
        await actor.stop()
    return time.perf_counter() - t0


async def bare_spawn_stop() -> float:
    async def idle(queue: asyncio.Queue[Any]) -> None:
        await queue.get()

    t0 = time.perf_counter()
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue() for _ in range(ACTORS)]
    tasks = [asyncio.create_task(idle(q)) for q in queues]
    await asyncio.sleep(0)
    for q in queues:
        q.put_nowait(None)
    await asyncio.gather(*tasks)
    return time.perf_counter() - t0


# -- memory -----------------------------------------------------------------------------


async def memory_per(
    spawn: Callable[[], Awaitable[Any]], stop: Callable[[Any], Awaitable[Any]]
) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    items = [await spawn() for _ in range(ACTORS)]
    await asyncio.sleep(0)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    for item in items:
        await stop(item)
    return (after - before) / ACTORS


async def bare_spawn() -> tuple[asyncio.Task[Any], asyncio.Queue[Any]]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    return asyncio.create_task(queue.get()), queue


async def bare_stop(item: tuple[asyncio.Task[Any], asyncio.Queue[Any]]) -> None:
    item[1].put_nowait(None)
    await item[0]


async def main() -> None:
    emit("call_per_s", await best_of(actor_calls), "calls/s", "asyncio Queue+Future",
         await best_of(bare_calls))  # fmt: skip
    emit("cast_per_s", await best_of(actor_casts), "casts/s", "asyncio Queue put_nowait",
         await best_of(bare_casts))  # fmt: skip
    ours, bare = await supervisor_restarts(), await bare_restarts()
    emit("restart_latency_median_ms", statistics.median(ours) * 1e3, "ms",
         "asyncio task re-created by a watchdog", statistics.median(bare) * 1e3)  # fmt: skip
    emit("restart_latency_p99_ms", statistics.quantiles(ours, n=100)[98] * 1e3, "ms",
         "asyncio task re-created by a watchdog",
         statistics.quantiles(bare, n=100)[98] * 1e3)  # fmt: skip
    emit("spawn_stop_10k_actors_s", await best_of(actor_spawn_stop, False), "s",
         "10k asyncio tasks on Queues", await best_of(bare_spawn_stop, False))  # fmt: skip
    emit("memory_per_idle_actor_bytes", await memory_per(lambda: Echo().start(), _stop), "bytes",
         "asyncio task + Queue", await memory_per(bare_spawn, bare_stop))  # fmt: skip


async def _stop(actor: Echo) -> None:
    await actor.stop()


if __name__ == "__main__":
    # The restart figure measures the runtime, not the log handler that formats each
    # crash's traceback (about 0.1 ms with the default stderr handler).
    logging.getLogger("echo.runtime").setLevel(logging.CRITICAL)
    asyncio.run(main())
