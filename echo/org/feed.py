"""The organisation's event feed: every audited state change, after a cursor.

Every state change in ECHO writes its `agent_actions` row in the same transaction
(a message published, a task claimed or finished, a workflow's phase, a decision,
an agent's health state or pid), so the audit log is the one record of what
happened, in order. Migration 013 adds a NOTIFY `<namespace>:events` to each
inserting statement, so a reader wakes when there is something to read.

Unlike message ids, audit ids are not made visible in id order: a transaction that
drew id 10 can commit after one that drew 11. A reader that kept one number would
skip 10 for good. `FeedCursor` therefore remembers the ids it has not seen below the
highest one it has (the gaps), reads them again on each wake-up, and gives a gap up
after `gap_wait` seconds (a rolled-back transaction also leaves one). Every event is
handed out once; `settled` is the position below which nothing more can come, the
cursor to resume from: resuming there may repeat a few events seen after it, never
skip one, so a consumer deduplicates by event id (at least once, like the bus).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from echo import db

Q = db.load_queries("events")

#: Gaps tracked at most; a larger hole (a big rolled-back batch) is given up at once.
MAX_GAPS = 2000


@dataclass(frozen=True)
class Event:
    """One row of the audit log."""

    id: int
    at: datetime
    actor: str
    action: str
    subject_type: str
    subject_id: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Any) -> Event:
        return cls(
            id=row["id"], at=row["at"], actor=row["actor"], action=row["action"],
            subject_type=row["subject_type"], subject_id=row["subject_id"],
            details=dict(row["details"] or {}),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.id, "at": self.at.isoformat(), "actor": self.actor, "action": self.action,
            "subject_type": self.subject_type, "subject_id": self.subject_id, "details": self.details,
        }


class FeedCursor:
    """Which ids were handed out, which are still missing, and where to resume."""

    def __init__(self, start: int, *, gap_wait: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.high = start
        self.gap_wait = gap_wait
        self.clock = clock
        self.gaps: dict[int, float] = {}

    def take(self, ids: Iterable[int]) -> list[int]:
        """The ids of a read that are new (each is handed out once); notes new gaps."""
        now = self.clock()
        fresh: list[int] = []
        for i in sorted(set(ids)):
            if i in self.gaps:
                del self.gaps[i]
                fresh.append(i)
            elif i > self.high:
                if i - self.high - 1 <= MAX_GAPS:
                    for missing in range(self.high + 1, i):
                        self.gaps[missing] = now
                self.high = i
                fresh.append(i)
        self.expire()
        return fresh

    def expire(self) -> None:
        now = self.clock()
        for gap, since in list(self.gaps.items()):
            if now - since >= self.gap_wait:
                del self.gaps[gap]
        while len(self.gaps) > MAX_GAPS:
            del self.gaps[min(self.gaps)]

    @property
    def settled(self) -> int:
        """Every id at or below this has been handed out or given up."""
        return min(self.gaps) - 1 if self.gaps else self.high


class Feed:
    """Reads the events after a cursor, each once, as they become visible."""

    def __init__(self, database: db.Database, cursor: FeedCursor, *, batch: int = 500) -> None:
        self.database = database
        self.cursor = cursor
        self.batch = batch

    @classmethod
    async def from_now(cls, database: db.Database, **options: Any) -> Feed:
        """A feed of what happens from now on."""
        async with database.acquire() as conn:
            last = int(await conn.fetchval(Q["last"]))
        return cls(database, FeedCursor(last, **options))

    async def read(self) -> list[Event]:
        """Everything new since the last read (gaps that filled, then rows past the top)."""
        rows: dict[int, Any] = {}
        fresh: set[int] = set()
        async with self.database.acquire() as conn:
            if self.cursor.gaps:
                found = await conn.fetch(Q["these"], sorted(self.cursor.gaps))
                rows.update((r["id"], r) for r in found)
                fresh.update(self.cursor.take(r["id"] for r in found))
            while True:
                page = await conn.fetch(Q["after"], self.cursor.high, self.batch)
                rows.update((r["id"], r) for r in page)
                fresh.update(self.cursor.take(r["id"] for r in page))
                if len(page) < self.batch:
                    break
        self.cursor.expire()
        return [Event.from_row(rows[i]) for i in sorted(fresh)]
