"""The chain buffer, without Postgres: notices in any order come out in chain order."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from echo.bus import ChainBuffer


@dataclass(frozen=True)
class N:
    db_id: int
    prev: int | None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def follow(buffer: ChainBuffer[N], cursor: int) -> tuple[list[int], int]:
    """What a subscriber does: hand over from the cursor while the chain goes on."""
    out = []
    while (notice := buffer.next(cursor)) is not None:
        out.append(notice.db_id)
        cursor = notice.db_id
    return out, cursor


def test_out_of_order_notices_wait_for_their_predecessor() -> None:
    clock = Clock()
    buffer: ChainBuffer[N] = ChainBuffer(0.02, clock=clock)
    buffer.add(N(3, 2))
    assert follow(buffer, 1) == ([], 1)
    buffer.settle(1)
    assert buffer.in_gap and not buffer.gap_due() and buffer.gap_wait() == 0.02
    buffer.add(N(2, 1))
    assert follow(buffer, 1) == ([2, 3], 3)
    buffer.settle(3)
    assert not buffer.in_gap and buffer.gap_wait() is None and len(buffer) == 0


def test_a_gap_is_due_after_its_grace_and_a_read_closes_it() -> None:
    clock = Clock()
    buffer: ChainBuffer[N] = ChainBuffer(0.5, clock=clock)
    buffer.add(N(5, 4))  # 4 never comes: its publisher died before PUBLISH
    buffer.settle(3)
    clock.now = 0.49
    assert not buffer.gap_due()
    clock.now = 0.5
    assert buffer.gap_due() and buffer.highest() == 5
    assert buffer.close_gap() and not buffer.close_gap()
    # The table read moved the cursor to 5: the waiting notice is a duplicate now.
    assert buffer.settle(5) == 1 and len(buffer) == 0 and not buffer.in_gap


@given(st.integers(min_value=1, max_value=40).flatmap(
    lambda n: st.tuples(st.just(n), st.permutations(range(1, n + 1)),
                        st.lists(st.integers(min_value=1, max_value=n), max_size=10))))
def test_any_arrival_order_with_duplicates_hands_over_each_id_once_in_order(
    case: tuple[int, list[int], list[int]],
) -> None:
    n, order, repeats = case
    buffer: ChainBuffer[N] = ChainBuffer(1.0, clock=Clock())
    cursor, handed = 0, []
    for db_id in [*order, *repeats]:
        if db_id <= cursor:  # the subscriber drops these before the buffer
            continue
        buffer.add(N(db_id, db_id - 1))
        out, cursor = follow(buffer, cursor)
        handed += out
        buffer.settle(cursor)
    assert handed == list(range(1, n + 1))
    assert len(buffer) == 0 and not buffer.in_gap


@given(st.integers(min_value=2, max_value=30).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(min_value=1, max_value=n),
                        st.permutations(range(1, n + 1)))))
def test_a_missing_notice_stops_the_chain_before_it_and_leaves_a_gap(
    case: tuple[int, int, list[int]],
) -> None:
    n, missing, order = case
    buffer: ChainBuffer[N] = ChainBuffer(1.0, clock=Clock())
    cursor, handed = 0, []
    for db_id in order:
        if db_id == missing:
            continue
        buffer.add(N(db_id, db_id - 1))
        out, cursor = follow(buffer, cursor)
        handed += out
        buffer.settle(cursor)
    assert handed == list(range(1, missing))
    assert len(buffer) == n - missing
    assert buffer.in_gap == (missing < n)
