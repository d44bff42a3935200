"""One capped exponential backoff, for every retry loop in ECHO.

A supervisor delaying a restart, a subscriber waiting for Postgres to come back, a
task waiting before its next attempt: each waits ``min(initial * factor**n, max)``
seconds after its n-th consecutive failure (0-based). With ``jitter=j`` the wait is
drawn uniformly from ``[d * (1 - j), d]``, so work that failed together (a rate limit
hits every worker at once) does not come back together. The formula lives here and
only here; SQL that needs a delay receives the numbers as parameters.

    backoff = Backoff(initial=0.1, max=5.0)
    retry = backoff.attempts()
    while True:
        try:
            await do_it()
            retry.reset()
        except StoreUnavailable:
            await retry.wait()
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Attempts", "Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential delay with a cap and optional jitter (a fraction from 0 to 1)."""

    initial: float = 0.1
    factor: float = 2.0
    max: float = 5.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.max < 0 or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError(
                f"invalid backoff {self!r}: need initial, max >= 0, factor >= 1, 0 <= jitter <= 1"
            )

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failure number ``attempt`` (0-based): no jitter."""
        # The exponent is capped so that a task retried a thousand times cannot overflow.
        return float(min(self.initial * self.factor ** min(attempt, 64), self.max))

    def delay(self, attempt: int) -> float:
        """The wait after failure number ``attempt`` (0-based), jitter applied."""
        d = self.ceiling(attempt)
        if self.jitter:
            d -= random.random() * self.jitter * d  # noqa: S311 - jitter, not security
        return d

    def __iter__(self) -> Iterator[float]:
        """Successive delays, forever: ``for d in backoff: ...``."""
        n = 0
        while True:
            yield self.delay(n)
            n += 1

    def attempts(self) -> Attempts:
        """A counter of consecutive failures for one retry loop."""
        return Attempts(self)


class Attempts:
    """Consecutive failures of one loop against one `Backoff`; `reset` on success."""

    __slots__ = ("backoff", "failures")

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self.failures = 0

    def next_delay(self) -> float:
        """The wait after one more failure; counts it."""
        d = self.backoff.delay(self.failures)
        self.failures += 1
        return d

    def reset(self) -> None:
        self.failures = 0

    async def wait(self) -> None:
        """Count a failure and sleep for its delay."""
        await asyncio.sleep(self.next_delay())
