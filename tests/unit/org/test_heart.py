"""The node's heart (echo/org/node/heart.py): each node restart waits longer, up to the
cap, and the wait starts over once the node stayed up for the cap. Time is the test's."""

from __future__ import annotations

from echo.org.node.heart import HEART_BACKOFF, Heart
from echo.runtime import Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_restart_waits_longer_up_to_the_cap() -> None:
    heart = Heart(Backoff(initial=1.0, factor=2.0, max=8.0), clock=Clock())
    assert [heart.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert heart.restarts == 6


def test_a_node_that_stayed_up_for_the_cap_starts_over_with_a_short_wait() -> None:
    clock = Clock()
    heart = Heart(Backoff(initial=1.0, factor=2.0, max=8.0), clock=clock)
    assert heart.next_delay() == 1.0
    heart.started()
    clock.now += 7.9  # up, but not for long: the next fault waits longer
    assert heart.next_delay() == 2.0
    heart.started()
    clock.now += 8.0
    assert heart.next_delay() == 1.0
    assert heart.restarts == 3


def test_the_default_backoff_starts_at_one_second_and_stops_at_a_minute() -> None:
    assert (HEART_BACKOFF.initial, HEART_BACKOFF.max) == (1.0, 60.0)
