"""The chain buffer: signed notices waiting until the subscriber's cursor reaches them.

Every signed notice names the id committed just before it (`prev`), so the notices of
a namespace form one chain. A subscriber at cursor `c` may hand over, without reading
the table, exactly the notice whose `prev` is `c`, then the one whose `prev` is that
notice's id, and so on. Notices arrive out of order (two publishers over Redis), so
those ahead of the cursor wait here, keyed by `prev`. A *gap* (a notice waiting whose
predecessor has not come) may close by itself a moment later; one that lasts longer
than `grace` seconds means a notice will not come (its publisher died between commit
and PUBLISH, it was unsigned, or dropped), and the subscriber then reads the table.

Pure: no I/O, and the clock is injectable, so the ordering rules have unit and
property tests of their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Chained(Protocol):
    """What the buffer needs of a notice."""

    @property
    def db_id(self) -> int: ...

    @property
    def prev(self) -> int | None: ...


N = TypeVar("N", bound=Chained)

__all__ = ["ChainBuffer", "Chained"]


class ChainBuffer(Generic[N]):
    """Notices ahead of the cursor, by `prev`, and how long a gap has lasted."""

    def __init__(self, grace: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self._clock = clock
        self._by_prev: dict[int, N] = {}
        self._gap_since: float | None = None

    def __len__(self) -> int:
        return len(self._by_prev)

    def add(self, notice: N) -> None:
        """Keep `notice` until the cursor reaches its `prev` (a later copy replaces it)."""
        self._by_prev[notice.prev or 0] = notice

    def next(self, cursor: int) -> N | None:
        """The notice that follows `cursor` in the chain, removed from the buffer."""
        return self._by_prev.pop(cursor, None)

    def settle(self, cursor: int) -> int:
        """After following: drop the notices at or below `cursor` (duplicates, or settled
        by a table read) and start or stop the gap clock. Returns how many were dropped."""
        dropped = 0
        if self._by_prev:
            stale = [prev for prev, n in self._by_prev.items() if n.db_id <= cursor]
            for prev in stale:
                del self._by_prev[prev]
            dropped = len(stale)
        if not self._by_prev:
            self._gap_since = None
        elif self._gap_since is None:
            self._gap_since = self._clock()
        return dropped

    @property
    def in_gap(self) -> bool:
        return self._gap_since is not None

    def gap_due(self) -> bool:
        """Whether a gap has lasted `grace`: time to read the table."""
        return self._gap_since is not None and self._clock() - self._gap_since >= self.grace

    def gap_wait(self) -> float | None:
        """Seconds until the current gap is due (None: no gap, wait for an event)."""
        if self._gap_since is None:
            return None
        return max(0.0, self._gap_since + self.grace - self._clock())

    def close_gap(self) -> bool:
        """A table read is closing the gap; returns whether there was one."""
        was = self._gap_since is not None
        self._gap_since = None
        return was

    def highest(self) -> int:
        """The highest id waiting (0 if none)."""
        return max((n.db_id for n in self._by_prev.values()), default=0)
