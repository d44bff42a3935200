"""Bug 4: components restarted in process must not pile handlers onto the one Listener.

The listener outlives the subscriber and the work pool (their supervisor restarts them
in the same process); each start registers NOTIFY handlers and a reconnect callback.
Unless a stop removes them, every restart adds more, and each keeps its stopped
component alive.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Awaitable, Callable

import anyio

from echo.bus import Subscriber
from echo.config import Settings
from echo.db import Database
from echo.listener import Listener
from echo.work import ExecutorPool, NoopExecutor
from tests.helpers import wait_until

RESTARTS = 5


async def assert_restarts_leave_nothing(
    listener: Listener, run_once: Callable[[int], Awaitable[weakref.ref[object]]]
) -> None:
    """Run a component `RESTARTS` times on one running listener (`run_once(baseline)`
    starts and stops it, returning a weak reference to it); the listener's registrations
    must be back at the baseline after each stop, and no stopped component kept alive."""
    counts: list[int] = []
    refs: list[weakref.ref[object]] = []
    async with anyio.create_task_group() as tg:
        await tg.start(listener.run)
        baseline = listener.registered
        for _ in range(RESTARTS):
            refs.append(await run_once(baseline))
            counts.append(listener.registered)
        tg.cancel_scope.cancel()
    gc.collect()
    assert counts == [baseline] * RESTARTS
    assert [r() for r in refs] == [None] * RESTARTS


async def test_a_restarted_work_pool_leaves_no_handlers_behind(
    notify_settings: Settings, db: Database
) -> None:
    listener = Listener(notify_settings.database)

    async def run_once(baseline: int) -> weakref.ref[object]:
        pool = ExecutorPool(notify_settings.work, db, {"noop": NoopExecutor()},
                            concurrency=1, listener=listener)
        async with anyio.create_task_group() as inner:
            await inner.start(pool.run)
            assert listener.registered > baseline  # it did register
            pool.stop()
        return weakref.ref(pool)

    await assert_restarts_leave_nothing(listener, run_once)


async def test_a_restarted_subscriber_leaves_no_handlers_behind(
    notify_settings: Settings,
) -> None:
    db = await Database.open(notify_settings.database, max_size=4)  # NOTIFY, the listener's transport
    listener = Listener(notify_settings.database)

    async def handler(message: object) -> None:
        pass

    async def run_once(baseline: int) -> weakref.ref[object]:
        sub = Subscriber(notify_settings.bus, db, "cto", handler, listener=listener)
        async with anyio.create_task_group() as inner:
            await inner.start(sub.run)
            await sub.wait_caught_up()
            await wait_until(lambda: listener.registered > baseline)  # it did register
            inner.cancel_scope.cancel()
        return weakref.ref(sub)

    try:
        await assert_restarts_leave_nothing(listener, run_once)
    finally:
        await db.close()
