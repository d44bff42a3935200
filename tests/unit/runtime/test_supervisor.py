"""Supervisor: ordered start, strategies, restart types, intensity, shutdown, nesting."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echo.runtime import (
    KILLED,
    Backoff,
    ChildSpec,
    Process,
    StartError,
    Supervisor,
    SupervisorEscalation,
    UnknownChild,
    gave_up,
    is_normal,
)

from .helpers import Crash, Probe, crash

pytestmark = pytest.mark.anyio


def specs(log: list[Any], *labels: str, **options: Any) -> list[ChildSpec]:
    return [ChildSpec(label, lambda label=label: Probe(label, log), **options) for label in labels]


async def processes(sup: Supervisor) -> dict[Any, Process | None]:
    return {info.id: info.process for info in await sup.which_children()}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_children_start_in_order_each_init_finishing_first() -> None:
    log: list[Any] = []
    async with Supervisor(specs(log, "a", "b", "c")):
        assert log == [
            ("init", "a"), ("ready", "a"),
            ("init", "b"), ("ready", "b"),
            ("init", "c"), ("ready", "c"),
        ]  # fmt: skip


async def test_init_failure_fails_start_and_stops_started_children_in_reverse() -> None:
    log: list[Any] = []
    children = [
        *specs(log, "a", "b"),
        ChildSpec("c", lambda: Probe("c", log, fail_init=Crash("no"))),
        *specs(log, "d"),
    ]
    sup = Supervisor(children)
    with pytest.raises(StartError) as info:
        await sup.start()
    assert info.value.child_id == "c" and isinstance(info.value.reason, Crash)
    assert [e[:2] for e in log if e[0] == "terminate"] == [("terminate", "b"), ("terminate", "a")]
    assert ("init", "d") not in log
    assert not sup.alive


async def test_shutdown_is_in_reverse_start_order() -> None:
    log: list[Any] = []
    sup = await Supervisor(specs(log, "a", "b", "c")).start()
    assert await sup.stop() == "shutdown"
    assert [e[1] for e in log if e[0] == "terminate"] == ["c", "b", "a"]


@pytest.mark.parametrize(
    ("strategy", "restarted", "terminated"),
    [
        ("one_for_one", {"b"}, []),
        ("one_for_all", {"a", "b", "c"}, ["c", "a"]),
        ("rest_for_one", {"b", "c"}, ["c"]),
    ],
)
async def test_strategies(strategy: Any, restarted: set[str], terminated: list[str]) -> None:
    log: list[Any] = []
    async with Supervisor(specs(log, "a", "b", "c"), strategy=strategy) as sup:
        before = await processes(sup)
        log.clear()
        b = before["b"]
        assert b is not None
        await crash(b)
        after = await processes(sup)
        assert {k for k in before if after[k] is not before[k]} == restarted
        assert all(p is not None and p.alive for p in after.values())
        assert [e[1] for e in log if e[0] == "terminate" and e[1] != "b"] == terminated
        inits = [e[1] for e in log if e[0] == "init"]
        assert inits == sorted(restarted)  # restarted in start order


@pytest.mark.parametrize(
    ("restart", "reason", "restarted"),
    [
        ("permanent", "normal", True),
        ("permanent", Crash("x"), True),
        ("transient", "normal", False),
        ("transient", "shutdown", False),
        ("transient", ("shutdown", "done"), False),
        ("transient", Crash("x"), True),
        ("transient", "killed", True),
        ("temporary", Crash("x"), False),
    ],
)
async def test_restart_types(restart: Any, reason: Any, restarted: bool) -> None:
    async with Supervisor(specs([], "w", restart=restart)) as sup:
        child = (await processes(sup))["w"]
        assert isinstance(child, Probe)
        if isinstance(reason, BaseException):
            await crash(child, reason)
        elif reason == "killed":
            await child.stop(timeout="brutal_kill")
        else:
            await child.call(("stop", reason))
            await child.wait()
        now = await processes(sup)
        if restarted:
            assert now["w"] is not None and now["w"] is not child and now["w"].alive
        elif restart == "temporary":
            assert now == {}  # forgotten
        else:
            assert now == {"w": None}


async def test_intensity_exceeded_stops_children_in_reverse_and_escalates() -> None:
    log: list[Any] = []
    clock = FakeClock()
    sup = await Supervisor(specs(log, "a", "b", "c"), clock=clock).start()
    for _ in range(3):
        clock.now += 1
        b = (await processes(sup))["b"]
        assert b is not None
        await crash(b, Crash("again"))
    log.clear()
    b = (await processes(sup))["b"]
    assert b is not None
    await crash(b, Crash("last"))
    reason = gave_up(await sup.wait())
    assert isinstance(reason, SupervisorEscalation)
    assert reason.child_id == "b" and reason.restarts == 4 and reason.intensity == 4
    assert str(reason.last_error) == "last"
    assert [e[1] for e in log if e[0] == "terminate" and e[1] != "b"] == ["c", "a"]


async def test_restarts_spread_beyond_the_window_do_not_escalate() -> None:
    clock = FakeClock()
    async with Supervisor(specs([], "a"), max_restarts=1, max_seconds=5, clock=clock) as sup:
        for _ in range(5):
            clock.now += 5.5
            child = (await processes(sup))["a"]
            assert child is not None
            await crash(child)
        assert sup.alive


async def test_escalation_fails_upward_through_nested_supervisors_and_run() -> None:
    log: list[Any] = []
    inner_spec = ChildSpec("inner", lambda: Supervisor(specs(log, "x"), max_restarts=0))
    outer = Supervisor([inner_spec], max_restarts=0)
    async with anyio.create_task_group() as tg:

        async def crash_the_leaf() -> None:
            await anyio.wait_all_tasks_blocked()
            inner = (await processes(outer))["inner"]
            assert isinstance(inner, Supervisor)
            assert (await outer.count_children())["supervisors"] == 1
            x = (await processes(inner))["x"]
            assert x is not None
            await crash(x)

        tg.start_soon(crash_the_leaf)
        with pytest.raises(SupervisorEscalation) as info:
            await outer.run()
    assert info.value.child_id == "inner"
    inner_gave_up = gave_up(info.value.last_error)  # ("shutdown", escalation): a shutdown
    assert inner_gave_up is not None and inner_gave_up.child_id == "x"


async def test_nested_supervisor_is_restarted_by_its_parent() -> None:
    inner_spec = ChildSpec("inner", lambda: Supervisor(specs([], "x"), max_restarts=0))
    async with Supervisor([inner_spec]) as outer:
        inner = (await processes(outer))["inner"]
        assert isinstance(inner, Supervisor)
        x = (await processes(inner))["x"]
        assert x is not None
        await crash(x)
        await inner.wait()
        new_inner = (await processes(outer))["inner"]
        assert isinstance(new_inner, Supervisor) and new_inner is not inner and new_inner.alive


async def test_shutdown_timeout_kills_and_brutal_kill_skips_terminate() -> None:
    log: list[Any] = []
    children = [
        ChildSpec("slow", lambda: Probe("slow", log, hang_terminate=True), shutdown=0.05),
        ChildSpec("brutal", lambda: Probe("brutal", log), shutdown="brutal_kill"),
    ]
    sup = await Supervisor(children).start()
    slow, brutal = (await processes(sup)).values()
    await sup.stop()
    assert slow is not None and slow.exit_reason == KILLED
    assert brutal is not None and brutal.exit_reason == KILLED
    assert [e[1] for e in log if e[0] == "terminate"] == ["slow"]


async def test_killing_a_supervisor_kills_its_children() -> None:
    sup = await Supervisor(specs([], "a", "b")).start()
    children = list((await processes(sup)).values())
    await sup.stop(timeout="brutal_kill")
    for child in children:
        assert child is not None
        assert await child.wait() == KILLED


async def test_a_child_that_fails_to_restart_counts_as_failing_again() -> None:
    attempts: list[int] = []

    def factory() -> Probe:
        attempts.append(1)
        return Probe("flaky", fail_init=Crash("init") if len(attempts) > 1 else None)

    sup = await Supervisor([ChildSpec("flaky", factory)], max_restarts=2).start()
    child = (await processes(sup))["flaky"]
    assert child is not None
    await crash(child)
    reason = gave_up(await sup.wait())
    assert isinstance(reason, SupervisorEscalation)
    assert len(attempts) == 3  # the start, then two restarts that failed in init
    assert str(reason.last_error) == "init"


async def test_backoff_delays_the_restart() -> None:
    assert [Backoff(0.1, 2, 0.5).delay(n) for n in range(4)] == [0.1, 0.2, 0.4, 0.5]
    restarted = anyio.Event()
    starts: list[float] = []

    def factory() -> Probe:
        starts.append(anyio.current_time())
        if len(starts) == 2:
            restarted.set()
        return Probe("b")

    spec = ChildSpec("b", factory, backoff=Backoff(initial=0.05, factor=2, max=1))
    async with Supervisor([spec]) as sup:
        child = (await processes(sup))["b"]
        assert child is not None
        crashed_at = anyio.current_time()
        await crash(child)
        with anyio.fail_after(2):
            await restarted.wait()
        assert starts[1] - crashed_at >= 0.05


async def test_pending_backoff_restart_shows_no_process_and_is_dropped_on_stop() -> None:
    spec = ChildSpec("b", lambda: Probe("b"), backoff=Backoff(initial=30))
    sup = await Supervisor([spec]).start()
    child = (await processes(sup))["b"]
    assert child is not None
    await crash(child)
    assert await processes(sup) == {"b": None}
    assert await sup.stop() == "shutdown"


async def test_terminate_and_restart_child() -> None:
    async with Supervisor(specs([], "a", "b")) as sup:
        await sup.terminate_child("a")
        assert (await processes(sup))["a"] is None
        assert (await sup.count_children())["active"] == 1
        restarted = await sup.restart_child("a")
        assert restarted.alive
        with pytest.raises(UnknownChild):
            await sup.terminate_child("nope")
        with pytest.raises(UnknownChild):
            await sup.restart_child("nope")


def test_specs_are_validated() -> None:
    with pytest.raises(ValueError, match="restart"):
        ChildSpec("a", Probe, restart="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shutdown"):
        ChildSpec("a", Probe, shutdown="soon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate"):
        Supervisor([ChildSpec("a", Probe), ChildSpec("a", Probe)])
    with pytest.raises(ValueError, match="strategy"):
        Supervisor([], strategy="all_for_none")  # type: ignore[arg-type]


# -- property: random crash sequences against a model of the intensity rule -------------

STRATEGIES = ["one_for_one", "one_for_all", "rest_for_one"]
LABELS = ["a", "b", "c"]


@settings(max_examples=60, deadline=None)
@given(
    strategy=st.sampled_from(STRATEGIES),
    max_restarts=st.integers(min_value=0, max_value=4),
    crashes=st.lists(
        st.tuples(st.sampled_from(LABELS), st.sampled_from([0.0, 0.5, 1.0, 2.5, 5.0, 6.0])),
        max_size=12,
    ),
)
def test_random_crashes_match_the_intensity_model(
    strategy: Any, max_restarts: int, crashes: list[tuple[str, float]]
) -> None:
    max_seconds = 5.0

    async def scenario() -> None:
        clock = FakeClock()
        sup = Supervisor(
            specs([], *LABELS),
            strategy=strategy,
            max_restarts=max_restarts,
            max_seconds=max_seconds,
            clock=clock,
        )
        await sup.start()
        restarts: list[float] = []  # the model: OTP's add_restart
        failures: dict[str, list[float]] = {label: [] for label in LABELS}
        for label, dt in crashes:
            clock.now += dt
            now = clock.now
            restarts = [t for t in restarts if t >= now - max_seconds] + [now]
            failures[label] = [t for t in failures[label] if t >= now - max_seconds] + [now]
            before = await processes(sup)
            victim = before[label]
            assert victim is not None
            await crash(victim)
            if len(restarts) > max_restarts:
                reason = gave_up(await sup.wait())
                assert isinstance(reason, SupervisorEscalation)
                assert reason.child_id == label
                assert reason.intensity == len(restarts)
                assert reason.restarts == len(failures[label])
                assert all(p is not None and not p.alive for p in before.values())
                return
            after = await processes(sup)
            index = LABELS.index(label)
            expected = {
                "one_for_one": {label},
                "one_for_all": set(LABELS),
                "rest_for_one": set(LABELS[index:]),
            }[strategy]
            assert {k for k in LABELS if after[k] is not before[k]} == expected
            assert all(p is not None and p.alive for p in after.values())
        assert sup.alive
        await sup.stop()

    anyio.run(scenario)


async def test_a_transient_child_supervisor_that_gives_up_is_not_restarted() -> None:
    """Bug 7, as OTP: a supervisor past its intensity exits with ``shutdown`` (carrying
    the escalation), so a ``transient`` parent spec leaves it down; the details stay."""
    inner_spec = ChildSpec("inner", lambda: Supervisor(specs([], "x"), max_restarts=0),
                           restart="transient")
    async with Supervisor([inner_spec, *specs([], "sibling")]) as outer:
        inner = (await processes(outer))["inner"]
        assert isinstance(inner, Supervisor)
        x = (await processes(inner))["x"]
        assert x is not None
        await crash(x, Crash("leaf"))
        reason = await inner.wait()
        assert isinstance(reason, tuple) and reason[0] == "shutdown"
        assert is_normal(reason)
        escalation = gave_up(reason)
        assert escalation is not None and escalation.child_id == "x"
        assert str(escalation.last_error) == "leaf"
        await outer.count_children()  # the Down has been handled by now
        assert (await processes(outer))["inner"] is None
        assert outer.alive
