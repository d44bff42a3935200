"""The process kernel: exit reasons, monitors, links, run() and async with."""

from __future__ import annotations

import anyio
import pytest

from echo.runtime import (
    NORMAL,
    Down,
    Exit,
    Process,
    demonitor,
    is_normal,
    link,
    monitor,
    unlink,
)

from .helpers import Crash, Probe, crash

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("reason", "normal"),
    [
        ("normal", True),
        ("shutdown", True),
        (("shutdown", "bye"), True),
        ("killed", False),
        (Crash("x"), False),
        (("other", 1), False),
        ("weird", False),
    ],
)
def test_is_normal_follows_elixir(reason: object, normal: bool) -> None:
    assert is_normal(reason) is normal


async def test_monitor_delivers_down_with_the_reason() -> None:
    async with Probe("watcher") as watcher:
        target = await Probe("target").start()
        ref = watcher.monitor(target)
        await crash(target)
        down = await watcher.next_info()
        assert isinstance(down, Down)
        assert down.ref == ref and down.process is target
        assert isinstance(down.reason, Crash)


async def test_monitor_of_an_exited_process_fires_at_once_and_demonitor_silences() -> None:
    target = await Probe().start()
    await target.stop()
    seen: list[Down] = []
    monitor(target, seen.append)
    assert [d.reason for d in seen] == ["shutdown"]

    other = await Probe().start()
    ref = monitor(other, seen.append)
    demonitor(ref)
    await other.stop()
    assert len(seen) == 1


async def test_link_propagates_a_crash_to_a_peer_that_does_not_trap() -> None:
    a = await Probe("a").start()
    b = await Probe("b").start()
    a.link(b)
    error = Crash("boom")
    await crash(a, error)
    assert await b.wait() is error  # same reason, as in Erlang


async def test_trapping_peer_receives_exit_instead_of_dying() -> None:
    a = await Probe("a").start()
    async with Probe("b", trap=True) as b:
        b.link(a)
        await crash(a)
        message = await b.next_info()
        assert isinstance(message, Exit) and message.process is a
        assert isinstance(message.reason, Crash)
        assert b.alive


async def test_normal_exit_does_not_kill_a_linked_peer_and_unlink_cuts_the_tie() -> None:
    async with Probe("b") as b:
        a = await Probe("a").start()
        link(a, b)
        assert await a.call(("stop", NORMAL)) == "stopping"
        await a.wait()
        assert b.alive

        c = await Probe("c").start()
        link(c, b)
        unlink(b, c)
        await crash(c)
        assert b.alive


async def test_linking_to_an_exited_process_signals_noproc() -> None:
    dead = await Probe().start()
    await dead.stop()
    live = await Probe().start()
    live.link(dead)
    assert await live.wait() == "noproc"


async def test_run_returns_normal_raises_crashes_and_stops_on_cancel() -> None:
    quitter = Probe()

    async def stop_soon() -> None:
        await anyio.wait_all_tasks_blocked()
        await quitter.call(("stop", NORMAL))

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_soon)
        assert await quitter.run() == NORMAL

    crasher = Probe()

    async def crash_soon() -> None:
        await anyio.wait_all_tasks_blocked()
        crasher.cast(Crash("late"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(crash_soon)
        with pytest.raises(Crash):
            await crasher.run()

    runner = Probe()
    with anyio.move_on_after(0.05):
        await runner.run()
    assert runner.exit_reason == "shutdown"
    assert runner.log[-1] == ("terminate", "probe", "shutdown")


async def test_base_process_is_a_valid_minimal_child() -> None:
    process = await Process(name="bare").start()
    assert await process.wait() == NORMAL
    assert "bare" in repr(process)


async def test_a_raising_monitor_callback_does_not_break_the_exit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bug 3: one bad callback must not hide the exit from the others, links or waiters."""
    target = await Probe("target").start()
    seen: list[Down] = []

    def explode(down: Down) -> None:
        raise RuntimeError("callback bug")

    monitor(target, explode)
    monitor(target, seen.append)
    peer = await Probe("peer").start()
    peer.link(target)
    waited: list[object] = []

    async def waiter() -> None:
        waited.append(await target.wait())

    with caplog.at_level("ERROR", logger="echo.runtime"), anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            await crash(target)
    assert [type(r) for r in waited] == [Crash]
    assert [type(d.reason) for d in seen] == [Crash]
    assert isinstance(await peer.wait(), Crash)
    assert any("monitor callback" in r.getMessage() and r.exc_info for r in caplog.records)
