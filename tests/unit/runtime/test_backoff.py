"""The one backoff: capped exponential delays, jitter bounds, consecutive-failure counting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echo.runtime import Backoff


def test_delays_double_up_to_the_cap() -> None:
    assert [Backoff(0.1, 2, 0.5).delay(n) for n in range(4)] == [0.1, 0.2, 0.4, 0.5]


def test_iteration_yields_the_same_sequence() -> None:
    b = Backoff(1, 3, 100)
    it = iter(b)
    assert [next(it) for _ in range(5)] == [1, 3, 9, 27, 81]


def test_attempts_count_failures_and_reset() -> None:
    retry = Backoff(1, 2, 60).attempts()
    assert [retry.next_delay() for _ in range(3)] == [1, 2, 4]
    retry.reset()
    assert retry.next_delay() == 1


@pytest.mark.parametrize("kwargs", [{"initial": -1}, {"factor": 0.5}, {"jitter": 1.5}, {"max": -2}])
def test_nonsense_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="invalid backoff"):
        Backoff(**kwargs)


@given(
    initial=st.floats(0, 10), factor=st.floats(1, 10), cap=st.floats(0, 1000),
    jitter=st.floats(0, 1), attempt=st.integers(0, 10_000),
)
def test_jittered_delay_stays_within_its_bounds(
    initial: float, factor: float, cap: float, jitter: float, attempt: int
) -> None:
    b = Backoff(initial, factor, cap, jitter)
    d = b.delay(attempt)
    ceiling = b.ceiling(attempt)
    assert ceiling <= cap
    assert ceiling * (1 - jitter) - 1e-9 <= d <= ceiling + 1e-9
