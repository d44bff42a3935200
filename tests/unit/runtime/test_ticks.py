"""Shared ticks: a wait is never longer than its period, and timers of one period (or of
its multiples) in one process come due at the same moment."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from echo.runtime.ticks import OFFSET, until_tick


@given(st.floats(0, 1e6), st.sampled_from([0.05, 0.2, 1.0, 2.0, 5.0]))
def test_the_wait_is_never_longer_than_the_period(now: float, period: float) -> None:
    assert 0 < until_tick(period, now) <= period


@given(st.floats(0, 1e6), st.floats(0, 1e6))
def test_timers_of_one_period_come_due_together(first: float, second: float) -> None:
    """Two timers that start at different moments fall on the same ticks."""
    a, b = first + until_tick(1.0, first), second + until_tick(1.0, second)
    assert abs((a - OFFSET) - round(a - OFFSET)) < 1e-6
    assert abs((b - OFFSET) - round(b - OFFSET)) < 1e-6


def test_a_longer_period_falls_on_the_ticks_of_a_shorter_one() -> None:
    now = 1234.567
    due = now + until_tick(5.0, now)
    assert abs(until_tick(1.0, due) - 1.0) < 1e-6 or until_tick(1.0, due) < 1e-6
