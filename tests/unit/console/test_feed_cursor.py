"""The event feed's cursor: each id handed out once, gaps waited for, then given up."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from echo.org.feed import FeedCursor


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_late_commit_below_the_top_is_still_handed_out_once() -> None:
    clock = Clock()
    cursor = FeedCursor(0, gap_wait=5.0, clock=clock)
    assert cursor.take([1, 2, 4]) == [1, 2, 4]  # 3 drawn by a transaction still open
    assert cursor.settled == 2  # resume from 2: 3 may still come
    assert cursor.take([4]) == []  # read again: not repeated
    clock.now = 1.0
    assert cursor.take([3]) == [3]  # it committed: handed out, late but not lost
    assert cursor.settled == 4 and not cursor.gaps


def test_a_gap_that_never_fills_is_given_up_after_gap_wait() -> None:
    clock = Clock()
    cursor = FeedCursor(10, gap_wait=5.0, clock=clock)
    cursor.take([13])
    assert cursor.settled == 10 and set(cursor.gaps) == {11, 12}
    clock.now = 5.0
    cursor.expire()
    assert cursor.settled == 13 and not cursor.gaps


def test_a_huge_hole_is_not_tracked_id_by_id() -> None:
    cursor = FeedCursor(0, gap_wait=5.0, clock=Clock())
    assert cursor.take([10_000_000]) == [10_000_000]
    assert not cursor.gaps and cursor.settled == 10_000_000


@given(st.permutations(list(range(1, 40))), st.integers(min_value=1, max_value=8))
def test_every_id_once_in_whatever_order_and_batches_they_become_visible(order: list[int], size: int) -> None:
    cursor = FeedCursor(0, gap_wait=1e9, clock=Clock())
    visible: set[int] = set()
    handed: list[int] = []
    for i in range(0, len(order), size):
        visible.update(order[i:i + size])
        handed.extend(cursor.take(sorted(visible)))  # a read sees everything visible so far
        assert all(h <= cursor.high for h in handed)
        assert all(x in visible for x in range(1, cursor.settled + 1))  # never resume past a hole
    assert sorted(handed) == list(range(1, 40)) and len(handed) == len(set(handed))
    assert cursor.settled == 39
