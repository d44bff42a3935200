"""The node's heart: when the organisation's top supervisor gives up, start it again.

OTP's `heart` restarts a whole Erlang node whose VM died. `echoctl up` does the same
for its organisation: an agent crashing past its own restart intensity stops its
subtree, which stops the node's top supervisor (echo/org/node/organisation.py); the heart
then starts every agent anew after a capped exponential backoff (1 s, 2 s, 4 s ...
at most 60 s), so a fault that outlives restarts is retried ever more slowly rather
than spun on or left down until someone runs `up`. The backoff starts over once the
node has stayed up for the cap. `up --no-heart` (`ECHO_HEART=0`) turns it off: the
node then stops and stays down, as before.

The decision is pure logic with an injectable clock (tests/unit/org/test_heart.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from echo.runtime import Backoff

#: How long the heart waits before each node restart.
HEART_BACKOFF = Backoff(initial=1.0, factor=2.0, max=60.0)


class Heart:
    """Counts the node's restarts and says how long to wait before the next."""

    def __init__(self, backoff: Backoff = HEART_BACKOFF, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.backoff = backoff
        self.clock = clock
        self.restarts = 0
        self._attempts = backoff.attempts()
        self._up_since = clock()

    def started(self) -> None:
        """The node is up (again): its uptime counts from now."""
        self._up_since = self.clock()

    def next_delay(self) -> float:
        """The top supervisor gave up: count a node restart, and the wait before it."""
        if self.clock() - self._up_since >= self.backoff.max:
            self._attempts.reset()  # it stayed up long enough: a new fault, a short wait
        self.restarts += 1
        return self._attempts.next_delay()
