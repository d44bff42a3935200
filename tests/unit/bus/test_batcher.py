"""Group commit, without Postgres: concurrent callers share rounds, each gets its own."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echo.bus import GroupCommit, Job
from echo.bus.batcher import Signal


class Writer:
    """A `write(jobs)` that records its rounds, and can be held or made to fail."""

    def __init__(self) -> None:
        self.rounds: list[list[Any]] = []
        self.gate: anyio.Event | None = None
        self.fail: BaseException | None = None
        self.leave_unsettled = False
        self.jobs: list[Job[Any, list[Any]]] = []

    async def __call__(self, jobs: list[Job[Any, list[Any]]]) -> None:
        self.rounds.append([item for job in jobs for item in job.items])
        self.jobs += jobs
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        for job in jobs:
            if not (self.leave_unsettled and job.confirm):
                job.settle(list(job.items))


async def test_an_idle_caller_is_written_at_once_in_its_own_round() -> None:
    writer = Writer()
    batcher: GroupCommit[Any, list[Any]] = GroupCommit(writer)
    assert await batcher.submit([1, 2]) == [1, 2]
    assert writer.rounds == [[1, 2]] and batcher.rounds == 1


async def test_callers_queued_behind_a_round_share_the_next_one() -> None:
    writer = Writer()
    writer.gate = anyio.Event()
    batcher: GroupCommit[Any, list[Any]] = GroupCommit(writer)
    results: dict[int, list[Any]] = {}

    async def one(i: int) -> None:
        results[i] = await batcher.submit([i])

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, 0)
        await anyio.wait_all_tasks_blocked()  # round 1 holds [0]
        for i in range(1, 6):
            tg.start_soon(one, i)
        await anyio.wait_all_tasks_blocked()
        writer.gate.set()
    assert writer.rounds == [[0], [1, 2, 3, 4, 5]]
    assert results == {i: [i] for i in range(6)}


async def test_a_failed_round_fails_every_job_in_it() -> None:
    writer = Writer()
    writer.gate = anyio.Event()
    writer.fail = RuntimeError("store down")
    batcher: GroupCommit[Any, list[Any]] = GroupCommit(writer)
    errors: list[BaseException] = []

    async def one(i: int) -> None:
        try:
            await batcher.submit([i])
        except RuntimeError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(one, i)
        await anyio.wait_all_tasks_blocked()
        writer.gate.set()
    assert len(errors) == 3 and all(e is writer.fail for e in errors)
    writer.fail = writer.gate = None
    assert await batcher.submit(["after"]) == ["after"]  # the batcher is not stuck


async def test_a_cancelled_queued_caller_is_withdrawn_and_the_rest_go_on() -> None:
    writer = Writer()
    writer.gate = anyio.Event()
    batcher: GroupCommit[Any, list[Any]] = GroupCommit(writer)
    results: list[list[Any]] = []

    async def one(i: int) -> None:
        results.append(await batcher.submit([i]))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, 0)
        await anyio.wait_all_tasks_blocked()
        with anyio.CancelScope() as doomed:
            doomed.cancel()
            with pytest.raises(anyio.get_cancelled_exc_class()):
                await batcher.submit(["withdrawn"])
        tg.start_soon(one, 2)
        await anyio.wait_all_tasks_blocked()
        writer.gate.set()
    assert "withdrawn" not in [x for r in writer.rounds for x in r]
    assert sorted(r[0] for r in results) == [0, 2]


async def test_a_job_the_round_leaves_unsettled_waits_for_its_outcome() -> None:
    writer = Writer()
    writer.leave_unsettled = True
    batcher: GroupCommit[Any, list[Any]] = GroupCommit(writer)
    got: list[list[Any]] = []

    async def confirmed() -> None:
        got.append(await batcher.submit(["c"], confirm=True))

    async with anyio.create_task_group() as tg:
        tg.start_soon(confirmed)
        await anyio.wait_all_tasks_blocked()
        assert got == [] and writer.rounds == [["c"]]  # written, not yet announced
        assert await batcher.submit(["next"]) == ["next"]  # the lead was handed on
        writer.jobs[0].settle(["announced"])  # what the publisher's announcer does
    assert got == [["announced"]]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=12))
def test_every_item_is_written_once_and_each_caller_gets_its_own(sizes: list[int]) -> None:
    async def main() -> None:
        writer = Writer()
        batcher: GroupCommit[Any, list[Any]] = GroupCommit(writer)
        results: dict[int, list[Any]] = {}

        async def one(i: int, size: int) -> None:
            await anyio.sleep(0)
            results[i] = await batcher.submit([(i, k) for k in range(size)])

        async with anyio.create_task_group() as tg:
            for i, size in enumerate(sizes):
                tg.start_soon(one, i, size)
        written = [x for r in writer.rounds for x in r]
        expected = [(i, k) for i, size in enumerate(sizes) for k in range(size)]
        assert sorted(written) == sorted(expected) and len(written) == len(set(written))
        assert results == {i: [(i, k) for k in range(size)] for i, size in enumerate(sizes)}
        assert batcher.rounds <= len(sizes)

    anyio.run(main)


async def test_a_signal_wakes_its_waiter_and_a_set_one_does_not_block() -> None:
    signal = Signal()
    woke: list[str] = []

    async def waiter() -> None:
        await signal.wait()
        woke.append("woke")

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert woke == []  # waiting, not done
        signal.set()
    assert woke == ["woke"]
    with anyio.fail_after(1):
        await signal.wait()  # already set: returns at once


class SlowWriter(Writer):
    """A round that takes one turn of the event loop, as a round trip does."""

    async def __call__(self, jobs: list[Job[Any, list[Any]]]) -> None:
        await anyio.lowlevel.checkpoint()
        await super().__call__(jobs)


@pytest.mark.parametrize("callers", [2, 8])
async def test_callers_publishing_in_loops_share_rounds_rather_than_alternate(callers: int) -> None:
    """Callers the last round just returned to must join the next round: without that,
    rounds alternate between one caller alone and all the others."""
    writer = SlowWriter()
    batcher: GroupCommit[Any, list[Any]] = GroupCommit(writer)
    each = 50

    async def loop(c: int) -> None:
        for i in range(each):
            assert await batcher.submit([(c, i)]) == [(c, i)]

    async with anyio.create_task_group() as tg:
        for c in range(callers):
            tg.start_soon(loop, c)
    assert sorted(item for r in writer.rounds for item in r) == sorted(
        (c, i) for c in range(callers) for i in range(each))
    assert batcher.rounds <= each + 2, batcher.rounds  # alternating would take about 2 * each


async def test_a_lone_caller_writes_without_first_yielding_a_turn_of_the_loop() -> None:
    """A single publisher in a loop: a turn of the loop before its write lets the
    announcement of its last message run first, in the path of every message (issue 20:
    the single-publisher figure)."""
    writer = SlowWriter()
    batcher: GroupCommit[Any, list[Any]] = GroupCommit(writer)
    turns = 0
    done = anyio.Event()

    async def count_turns() -> None:
        nonlocal turns
        while not done.is_set():
            turns += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(count_turns)
        await anyio.lowlevel.checkpoint()
        start = turns
        for i in range(100):
            await batcher.submit([i])
        done.set()
    assert batcher.rounds == 100
    assert turns - start <= 110, turns - start  # one turn per write (its round trip), not two
