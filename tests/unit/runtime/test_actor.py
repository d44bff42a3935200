"""Actor: call / cast / info, timeouts, crashes, stop and terminate."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from echo.runtime import (
    KILLED,
    Actor,
    ActorExit,
    ActorNotAlive,
    CallTimeout,
    RuntimeFault,
    StartError,
    UnexpectedMessage,
)

from .helpers import Crash, Probe, crash

pytestmark = pytest.mark.anyio


async def test_call_cast_and_send_reach_their_handlers() -> None:
    async with Probe() as probe:
        assert await probe.call("hi") == ("echo", "hi")
        probe.cast(2)
        probe.cast(3)
        assert await probe.call("get") == 5  # casts queued before the call are handled first
        probe.send("note")
        assert await probe.next_info() == "note"


async def test_start_returns_after_init_and_init_failure_fails_start() -> None:
    probe = Probe()
    await probe.start()
    assert probe.log == [("init", "probe"), ("ready", "probe")]
    await probe.stop()

    bad = Probe(fail_init=Crash("no db"))
    with pytest.raises(StartError) as info:
        await bad.start()
    assert isinstance(info.value.reason, Crash)
    assert not bad.alive
    assert not any(entry[0] == "terminate" for entry in bad.log)  # Elixir: no terminate


async def test_call_timeout_raises_in_the_caller_and_the_actor_lives_on() -> None:
    async with Probe() as probe:
        gate = anyio.Event()
        with pytest.raises(CallTimeout) as info:
            await probe.call(("wait", gate), timeout=0.05)
        assert isinstance(info.value, TimeoutError)
        gate.set()
        assert probe.alive
        assert await probe.call("again") == ("echo", "again")


async def test_crash_in_call_reaches_caller_and_becomes_the_exit_reason() -> None:
    probe = await Probe().start()
    error = Crash("boom")
    with pytest.raises(ActorExit) as info:
        await probe.call(error)
    assert info.value.reason is error
    assert await probe.wait() is error
    assert probe.exit_reason is error
    assert ("terminate", "probe", error) in probe.log


async def test_crash_in_cast_crashes_the_actor() -> None:
    probe = await Probe().start()
    error = Crash("cast")
    probe.cast(error)
    assert await probe.wait() is error


async def test_calling_a_dead_or_unstarted_actor_fails_fast() -> None:
    with pytest.raises(ActorNotAlive, match="never started"):
        await Probe().call("x")
    probe = await Probe().start()
    await crash(probe)
    with pytest.raises(ActorNotAlive, match="boom"):
        await probe.call("x")
    probe.cast(1)  # fire and forget: dropped silently, as in Elixir
    probe.send(1)


async def test_stop_runs_terminate_and_fails_queued_calls() -> None:
    probe = await Probe().start()
    gate = anyio.Event()
    results: list[Any] = []

    async def caller(request: Any) -> None:
        try:
            results.append(await probe.call(request))
        except ActorExit as exc:
            results.append(exc.reason)

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller, ("wait", gate))
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(caller, "queued")
        await anyio.wait_all_tasks_blocked()
        async with anyio.create_task_group() as stopper:
            stopper.start_soon(probe.stop, ("shutdown", "bye"))
            await anyio.wait_all_tasks_blocked()
            gate.set()
    assert results == ["waited", ("shutdown", "bye")]
    assert probe.exit_reason == ("shutdown", "bye")
    assert probe.log[-1] == ("terminate", "probe", ("shutdown", "bye"))


async def test_stop_from_inside_a_handler_takes_effect_after_it_returns() -> None:
    probe = await Probe().start()
    assert await probe.call(("stop", "normal")) == "stopping"
    assert await probe.wait() == "normal"


async def test_stop_kills_after_the_timeout_and_brutal_kill_skips_terminate() -> None:
    stuck = await Probe(hang_terminate=True).start()
    assert await stuck.stop(timeout=0.05) == KILLED
    assert stuck.log[-1][0] == "terminate"  # it was asked, then cancelled

    brutal = await Probe().start()
    assert await brutal.stop(timeout="brutal_kill") == KILLED
    assert not any(entry[0] == "terminate" for entry in brutal.log)


async def test_calling_itself_is_refused_not_deadlocked() -> None:
    class Narcissus(Actor):
        async def handle_call(self, request: Any) -> Any:
            return await self.call("me")

    actor = await Narcissus().start()
    with pytest.raises(ActorExit) as info:
        await actor.call("go")
    assert isinstance(info.value.reason, RuntimeFault)


async def test_default_handlers_crash_on_call_and_cast_and_drop_info() -> None:
    actor = await Actor(name="plain").start()
    actor.send("ignored")
    with pytest.raises(ActorExit) as info:
        await actor.call("what")
    assert isinstance(info.value.reason, UnexpectedMessage)

    other = await Actor().start()
    other.cast("what")
    assert isinstance(await other.wait(), UnexpectedMessage)


async def test_send_after_delivers_later() -> None:
    async with Probe() as probe:
        probe.send_after(0.01, "tick")
        assert await probe.next_info() == "tick"


async def test_start_twice_and_stop_unstarted_are_errors() -> None:
    with pytest.raises(RuntimeFault):
        await Probe().stop()
    async with Probe() as probe:
        with pytest.raises(RuntimeFault):
            await probe.start()


async def test_many_pending_calls_each_time_out_and_answered_ones_do_not() -> None:
    async with Probe() as probe:
        for i in range(300):  # answered calls, enough to compact the deadline queue
            assert await probe.call(i, timeout=0.2) == ("echo", i)
        gate = anyio.Event()
        outcomes: list[str] = []

        async def caller(request: Any, timeout: float) -> None:
            try:
                await probe.call(request, timeout=timeout)
                outcomes.append("reply")
            except CallTimeout:
                outcomes.append("timeout")

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller, ("wait", gate), 0.2)
            await anyio.wait_all_tasks_blocked()
            for i in range(100):
                tg.start_soon(caller, i, 0.05 if i % 2 else 0.1)
        assert outcomes == ["timeout"] * 101
        gate.set()
        assert await probe.call("after", timeout=0.2) == ("echo", "after")
