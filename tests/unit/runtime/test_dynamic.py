"""DynamicSupervisor: children on demand, max_children, forgetting finished children."""

from __future__ import annotations

from typing import Any

import pytest

from echo.runtime import (
    ChildSpec,
    DynamicSupervisor,
    MaxChildrenReached,
    StartError,
    SupervisorEscalation,
    UnknownChild,
    gave_up,
)

from .helpers import Crash, Probe, crash

pytestmark = pytest.mark.anyio


def spec(label: str, **options: Any) -> ChildSpec:
    return ChildSpec(label, lambda: Probe(label), **options)


async def test_start_which_count_and_terminate() -> None:
    async with DynamicSupervisor() as sup:
        a = await sup.start_child(spec("a"))
        b = await sup.start_child(spec("b"))
        assert a.alive and b.alive
        assert [(i.id, i.process) for i in await sup.which_children()] == [("a", a), ("b", b)]
        assert await sup.count_children() == {
            "specs": 2, "active": 2, "workers": 2, "supervisors": 0
        }  # fmt: skip
        await sup.terminate_child(a)
        assert a.exit_reason == "shutdown"
        await sup.terminate_child("b")
        assert await sup.which_children() == []
        with pytest.raises(UnknownChild):
            await sup.terminate_child("a")


async def test_max_children_is_a_clear_error() -> None:
    async with DynamicSupervisor(max_children=1) as sup:
        await sup.start_child(spec("a"))
        with pytest.raises(MaxChildrenReached, match="maximum of 1"):
            await sup.start_child(spec("b"))


async def test_a_failed_start_is_returned_and_the_supervisor_carries_on() -> None:
    async with DynamicSupervisor() as sup:
        bad = ChildSpec("bad", lambda: Probe("bad", fail_init=Crash("no")))
        with pytest.raises(StartError) as info:
            await sup.start_child(bad)
        assert info.value.child_id == "bad" and isinstance(info.value.reason, Crash)
        assert sup.alive and await sup.which_children() == []


async def test_restart_rules_and_forgetting() -> None:
    async with DynamicSupervisor() as sup:
        permanent = await sup.start_child(spec("p"))
        transient = await sup.start_child(spec("t", restart="transient"))
        temporary = await sup.start_child(spec("x", restart="temporary"))
        await crash(permanent)
        assert isinstance(transient, Probe)
        await transient.call(("stop", "normal"))
        await transient.wait()
        await crash(temporary)
        children = await sup.which_children()
        assert [i.id for i in children] == ["p"]
        assert children[0].process is not permanent and children[0].process is not None


async def test_intensity_escalates() -> None:
    sup = await DynamicSupervisor(max_restarts=1).start()
    child = await sup.start_child(spec("a"))
    await crash(child)
    child = (await sup.which_children())[0].process
    assert child is not None
    await crash(child)
    reason = gave_up(await sup.wait())
    assert isinstance(reason, SupervisorEscalation) and reason.child_id == "a"


async def test_shutdown_stops_children_in_reverse_order() -> None:
    log: list[Any] = []
    sup = await DynamicSupervisor().start()
    for label in "abc":
        await sup.start_child(ChildSpec(label, lambda label=label: Probe(label, log)))
    await sup.stop()
    assert [e[1] for e in log if e[0] == "terminate"] == ["c", "b", "a"]


def test_negative_max_children_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_children"):
        DynamicSupervisor(max_children=-1)
