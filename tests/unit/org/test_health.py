"""The circuit breaker and the state a reader derives from a heartbeat."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from echo.org.health import CircuitBreaker, classify


def test_breaker_opens_after_threshold_and_half_opens_after_timeout() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=5, clock=lambda: now[0])
    for _ in range(2):
        breaker.failure()
        assert breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 4.9
    assert not breaker.allow()
    now[0] = 5.0
    assert breaker.state == "half_open" and breaker.allow()
    breaker.failure()  # the trial failed: open again, for a full timeout
    assert not breaker.allow()
    now[0] = 10.0
    breaker.success()
    assert breaker.state == "closed" and breaker.failures == 0


def test_stale_heartbeat_is_unresponsive_and_clean_stop_is_down() -> None:
    now = datetime(2026, 12, 31, 23, 59, 58, tzinfo=UTC)
    fresh, stale = now - timedelta(seconds=4), now - timedelta(seconds=30)
    assert classify("healthy", fresh, 5, now) == "healthy"
    assert classify("degraded", fresh, 5, now) == "degraded"
    assert classify("healthy", stale, 5, now) == "unresponsive"
    assert classify("down", stale, 5, now) == "down"
    assert classify("healthy", None, 5, now) == "unresponsive"
