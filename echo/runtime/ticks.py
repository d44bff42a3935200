"""Shared ticks: the periodic timers of one process wake in the same loop iteration.

An idle agent has several timers of the same period (its lease renewal, its heartbeat,
the Redis keepalive PING, the subscriber's link check: 1 s each). Each started at its
own moment, so each woke the process on its own: four wake-ups a second where one does.
A timer that sleeps `until_tick(period)` instead of `period` wakes at this process's
next tick of that period, the moments `OFFSET + k * period` on the monotonic clock, so
all timers of one period (and of its multiples) fire together. `OFFSET` is random per
process, so the agents of one machine do not all wake at once.

The wait is never longer than `period`: a timer that promised "at most every period"
keeps its promise (it may fire sooner once, when it first falls in step).
"""

from __future__ import annotations

import random
import time

#: This process's phase, in seconds (a tick of any period <= 1 s falls on it).
OFFSET = random.random()  # noqa: S311 - a phase, not security


def until_tick(period: float, now: float | None = None) -> float:
    """Seconds from `now` (default `time.monotonic()`) to this process's next tick of
    `period`: in (0, period]."""
    if now is None:
        now = time.monotonic()
    return period - (now - OFFSET) % period
