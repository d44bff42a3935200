"""Where Claude runs are kept: sessions, events and transcripts (018, 019).

`RunStore` is the protocol; `PgRunStore` runs the named queries of
shared/sql/queries/runs.sql and `MemoryRunStore` is the in-memory adapter for unit
tests. Every write names the attempt (`Task`: task, worker, attempt) and lands only
while that worker still holds it, as the queue's results do: a write answering False
means the task is no longer ours, and the recorder writes nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from echo.db import Database, load_queries
from echo.work.runs.stream import RunEvent
from echo.work.tasks import Task

_Q = load_queries("runs")


@dataclass(frozen=True)
class PriorSession:
    """The session of an earlier attempt; `outcome` is its ledger outcome (None: its
    worker died or lost the task before it could write one)."""

    attempt: int
    session_id: str
    cwd: str | None
    outcome: str | None


class RunStore(Protocol):
    async def record_session(self, task: Task, session_id: str, cwd: str | None,
                             resumed_attempt: int | None) -> bool: ...

    async def append_events(self, task: Task, first_seq: int,
                            events: list[RunEvent]) -> bool: ...

    async def append_transcript(self, task: Task, session_id: str, project: str,
                                offset: int, chunk: bytes) -> bool: ...

    async def transcript_end(self, session_id: str) -> int: ...

    async def previous_session(self, task_id: int, attempt: int) -> PriorSession | None: ...

    async def transcript(self, session_id: str) -> tuple[str, bytes] | None: ...

    async def events(self, task_id: int, *, after: tuple[int, int] = (0, 0),
                     limit: int = 1000) -> list[dict[str, Any]]: ...

    async def purge(self, older_than_seconds: float) -> int: ...

    async def doing_now(self) -> list[dict[str, Any]]: ...


def _join(ranges: list[tuple[int, bytes]]) -> bytes:
    """Byte ranges (offset, chunk), sorted, as one file: overlaps skipped, a gap ends it."""
    out = bytearray()
    for offset, chunk in ranges:
        if offset > len(out):
            break
        out.extend(chunk[len(out) - offset:])
    return bytes(out)


class PgRunStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def record_session(self, task: Task, session_id: str, cwd: str | None,
                             resumed_attempt: int | None) -> bool:
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(_Q["record_session"], task.task_id, task.worker_id,
                                      task.attempt, session_id, cwd, resumed_attempt)
        return row is not None

    async def append_events(self, task: Task, first_seq: int, events: list[RunEvent]) -> bool:
        if not events:
            return True
        async with self.db.acquire() as conn:
            rows = await conn.fetch(
                _Q["append_events"], task.task_id, task.worker_id, task.attempt, first_seq,
                [e.kind for e in events], [e.turn for e in events],
                [e.cost_usd for e in events], [e.summary for e in events])
            if rows:
                return True
            # Nothing landed: not ours any more, or every event was there already.
            return await conn.fetchrow(_Q["owned"], task.task_id, task.worker_id,
                                       task.attempt) is not None

    async def append_transcript(self, task: Task, session_id: str, project: str,
                                offset: int, chunk: bytes) -> bool:
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(_Q["append_transcript"], task.task_id, task.worker_id,
                                      task.attempt, session_id, offset, project, chunk)
            if row is not None:
                return True
            return await conn.fetchrow(_Q["owned"], task.task_id, task.worker_id,
                                       task.attempt) is not None

    async def transcript_end(self, session_id: str) -> int:
        async with self.db.acquire() as conn:
            return int(await conn.fetchval(_Q["transcript_end"], session_id))

    async def previous_session(self, task_id: int, attempt: int) -> PriorSession | None:
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(_Q["previous_session"], task_id, attempt)
        if row is None:
            return None
        return PriorSession(row["attempt"], row["session_id"], row["cwd"], row["outcome"])

    async def transcript(self, session_id: str) -> tuple[str, bytes] | None:
        async with self.db.acquire() as conn:
            rows = await conn.fetch(_Q["transcript"], session_id)
        if not rows:
            return None
        return rows[0]["project"], _join([(r["offset_bytes"], bytes(r["chunk"])) for r in rows])

    async def events(self, task_id: int, *, after: tuple[int, int] = (0, 0),
                     limit: int = 1000) -> list[dict[str, Any]]:
        async with self.db.acquire() as conn:
            rows = await conn.fetch(_Q["events"], task_id, after[0], after[1], limit)
        return [dict(r) for r in rows]

    async def purge(self, older_than_seconds: float) -> int:
        async with self.db.acquire() as conn:
            return int(await conn.fetchval(_Q["purge"], older_than_seconds))

    async def doing_now(self) -> list[dict[str, Any]]:
        async with self.db.acquire() as conn:
            return [dict(r) for r in await conn.fetch(_Q["doing_now"])]


@dataclass
class MemoryRunStore:
    """The same store in memory; `owner` says which (task, worker, attempt) hold tasks
    (None: every writer does), so unit tests can take a task away."""

    owner: dict[int, tuple[str, int]] | None = None
    sessions: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    transcripts: dict[str, list[tuple[int, str, bytes]]] = field(default_factory=dict)

    def _owns(self, task: Task) -> bool:
        return self.owner is None or self.owner.get(task.task_id) == (task.worker_id,
                                                                       task.attempt)

    async def record_session(self, task: Task, session_id: str, cwd: str | None,
                             resumed_attempt: int | None) -> bool:
        if not self._owns(task):
            return False
        self.sessions[(task.task_id, task.attempt)] = {
            "session_id": session_id, "cwd": cwd, "resumed_attempt": resumed_attempt}
        return True

    async def append_events(self, task: Task, first_seq: int, events: list[RunEvent]) -> bool:
        if not self._owns(task):
            return False
        now = datetime.now(UTC)
        for n, e in enumerate(events):
            self.rows.append({"task_id": task.task_id, "attempt": task.attempt,
                              "seq": first_seq + n, "at": now, "kind": e.kind, "turn": e.turn,
                              "cost_usd": e.cost_usd, "summary": e.summary})
        return True

    async def append_transcript(self, task: Task, session_id: str, project: str,
                                offset: int, chunk: bytes) -> bool:
        if not self._owns(task):
            return False
        ranges = self.transcripts.setdefault(session_id, [])
        if all(o != offset for o, _, _ in ranges):
            ranges.append((offset, project, chunk))
        return True

    async def transcript_end(self, session_id: str) -> int:
        return max((o + len(c) for o, _, c in self.transcripts.get(session_id, [])), default=0)

    async def previous_session(self, task_id: int, attempt: int) -> PriorSession | None:
        earlier = sorted(a for (t, a) in self.sessions if t == task_id and a < attempt)
        if not earlier:
            return None
        found = self.sessions[(task_id, earlier[-1])]
        return PriorSession(earlier[-1], found["session_id"], found["cwd"], None)

    async def transcript(self, session_id: str) -> tuple[str, bytes] | None:
        ranges = sorted(self.transcripts.get(session_id, []))
        if not ranges:
            return None
        return ranges[0][1], _join([(o, c) for o, _, c in ranges])

    async def events(self, task_id: int, *, after: tuple[int, int] = (0, 0),
                     limit: int = 1000) -> list[dict[str, Any]]:
        found = [r for r in self.rows if r["task_id"] == task_id
                 and (r["attempt"], r["seq"]) > after]
        return sorted(found, key=lambda r: (r["attempt"], r["seq"]))[:limit]

    async def purge(self, older_than_seconds: float) -> int:
        return 0

    async def doing_now(self) -> list[dict[str, Any]]:
        latest: dict[int, dict[str, Any]] = {}
        for row in self.rows:  # every task counts as running here
            if row["kind"] != "tool_result":
                latest[row["task_id"]] = {**row, "role": None}
        return list(latest.values())
