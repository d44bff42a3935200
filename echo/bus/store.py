"""MessageStore: every database operation of the bus, on the process's `Database`.

The SQL is in `shared/sql/queries/messages.sql`; this module only binds
parameters and shapes results. Single statements run on `Database.acquire()`
(autocommit: the statement is its own transaction, audit trigger included, in
one round trip); anything with more than one statement runs in
`Database.transaction()` or on a connection the caller got from it.

A missing table means the namespace was never migrated; that surfaces as a
`MigrationError` telling the user what to run, not as a driver error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from echo.bus.envelope import Message, StoredMessage
from echo.db import Database, load_queries, schema_guard

Q = load_queries("messages")


@dataclass(frozen=True, slots=True)
class Inserted:
    """Where one message landed: its `db_id` (`id`), whether this call created it, and
    for a new row the id committed just before it (`prev`; None when unknown)."""

    id: int
    uuid: UUID
    created_at: datetime
    new: bool = True
    prev: int | None = None


def _columns(messages: Sequence[Message]) -> list[list[object]]:
    return [
        [m.uuid for m in messages],
        [m.channel for m in messages],
        [str(m.kind) for m in messages],
        [m.from_role for m in messages],
        [m.to_role for m in messages],
        [m.thread_id for m in messages],
        [m.subject for m in messages],
        [m.encoded_body for m in messages],
    ]


async def notify_in(conn: asyncpg.Connection, channels: Sequence[str], payloads: Sequence[str]) -> None:
    """NOTIFY mode's announcements, on the caller's connection: inside its transaction
    they go out exactly when (and only if) it commits (echo/bus/transport/notify.py)."""
    await conn.execute(Q["notify_many"], list(channels), list(payloads))


async def record_inbox(conn: asyncpg.Connection, role: str, message_id: int, attempt: str) -> bool:
    """Record that `role` handles message `message_id` (attempt `attempt`), inside the
    caller's transaction; False when it was recorded before (a redelivery)."""
    return await conn.fetchval(Q["record_inbox"], role, message_id, attempt) is not None


class MessageStore:
    """The messages table, the outbox view of it, and the per-role cursors."""

    def __init__(self, database: Database) -> None:
        self.db = database
        self.namespace = database.settings.namespace

    # ------------------------------------------------------------ writing

    async def insert(
        self, messages: Sequence[Message], *, published: bool = False,
        conn: asyncpg.Connection | None = None,
    ) -> list[Inserted]:
        """Insert `messages` in ONE statement (one transaction) and return their ids in
        input order. `published=True` is for a transport that announces inside the same
        transaction (NOTIFY); `conn` is that transaction's connection."""
        if not messages:
            return []
        if conn is None:
            async with self.db.acquire() as own:
                return await self._insert(own, messages, published)
        return await self._insert(conn, messages, published)

    async def _insert(
        self, conn: asyncpg.Connection, messages: Sequence[Message], published: bool
    ) -> list[Inserted]:
        with schema_guard(self.namespace):
            if len(messages) == 1:
                m = messages[0]
                rows = await conn.fetch(
                    Q["insert_one"], m.uuid, m.channel, str(m.kind), m.from_role, m.to_role,
                    m.thread_id, m.subject, m.encoded_body, published,
                )
            else:
                rows = await conn.fetch(Q["insert_many"], *_columns(messages), published)
            by_uuid: dict[UUID, Inserted] = {}
            # The rows of one statement are consecutive in commit order: each one's
            # predecessor is the row before it, and the first one's is the statement's.
            prev = rows[0]["prev"] if rows else None
            for r in sorted(rows, key=lambda r: r["id"]):
                by_uuid[r["uuid"]] = Inserted(r["id"], r["uuid"], r["created_at"], prev=prev)
                prev = r["id"] if prev is not None else None
            if len(by_uuid) < len(messages):  # retried uuids: the rows exist already
                missing = [m.uuid for m in messages if m.uuid not in by_uuid]
                for r in await conn.fetch(Q["ids_by_uuid"], missing):
                    by_uuid[r["uuid"]] = Inserted(r["id"], r["uuid"], r["created_at"], new=False)
        return [by_uuid[m.uuid] for m in messages]

    async def mark_published(
        self, ids: Sequence[int], *, conn: asyncpg.Connection | None = None
    ) -> None:
        if not ids:
            return
        if conn is not None:
            await conn.execute(Q["mark_published"], list(ids))
            return
        async with self.db.acquire() as own:
            await own.execute(Q["mark_published"], list(ids))

    async def any_unpublished(self, *, older_than: float) -> bool:
        """Whether any row waits for the relay: one read, so an idle round of the relay
        costs no transaction."""
        async with self.db.acquire() as conn:
            with schema_guard(self.namespace):
                return bool(await conn.fetchval(Q["any_unpublished"], older_than))

    async def lock_unpublished(
        self, conn: asyncpg.Connection, *, older_than: float, limit: int
    ) -> list[asyncpg.Record]:
        """Unpublished rows for the relay, locked in the caller's transaction (SKIP LOCKED)."""
        with schema_guard(self.namespace):
            return list(await conn.fetch(Q["lock_unpublished"], older_than, limit))

    # ------------------------------------------------------------ reading

    async def fetch_after(
        self, cursor: int, channels: Sequence[str], limit: int = 500
    ) -> list[StoredMessage]:
        """Messages on `channels` with id > `cursor`, oldest first. Ids commit in id order
        (see 002_messages.sql), so nothing can later appear below the last one read."""
        return (await self.read_after(cursor, channels, limit))[0]

    async def read_after(
        self, cursor: int, channels: Sequence[str], limit: int = 500
    ) -> tuple[list[StoredMessage], int]:
        """`fetch_after`, and the highest committed id in the same snapshot: when fewer
        than `limit` came back, every id up to it is settled for these channels."""
        async with self.db.acquire() as conn:
            with schema_guard(self.namespace):
                rows = await conn.fetch(Q["fetch_after"], cursor, list(channels), limit)
        settled = int(rows[0]["settled"]) if rows else cursor
        return [StoredMessage.from_row(r) for r in rows if r["id"] is not None], settled

    async def get_many(self, ids: Sequence[int]) -> list[StoredMessage]:
        async with self.db.acquire() as conn:
            with schema_guard(self.namespace):
                rows = await conn.fetch(Q["get_many"], list(ids))
        return [StoredMessage.from_row(r) for r in rows]

    async def get(self, db_id: int) -> StoredMessage | None:
        found = await self.get_many([db_id])
        return found[0] if found else None

    async def list_messages(
        self, *, role: str | None = None, since: int | None = None, limit: int = 20
    ) -> list[StoredMessage]:
        """For `echoctl messages`: after `since` (oldest first), else the latest `limit`."""
        async with self.db.acquire() as conn:
            with schema_guard(self.namespace):
                if since is not None:
                    rows = await conn.fetch(Q["list_since"], since, role, limit)
                else:
                    rows = list(reversed(await conn.fetch(Q["list_latest"], role, limit)))
        return [StoredMessage.from_row(r) for r in rows]

    async def answer_on(self, thread_id: str) -> StoredMessage | None:
        """The answer posted on a question's thread (echo/org/agent/asks.py), if any."""
        async with self.db.acquire() as conn:
            with schema_guard(self.namespace):
                row = await conn.fetchrow(Q["answer_on"], thread_id)
        return StoredMessage.from_row(row) if row is not None else None

    async def open_questions(self, role: str, *, within: float
                             ) -> list[tuple[StoredMessage, float]]:
        """Questions to `role` asked in the last `within` seconds that still wait for
        its answer, each with the seconds its asker still waits (the database's clock)."""
        async with self.db.acquire() as conn:
            with schema_guard(self.namespace):
                rows = await conn.fetch(Q["open_questions"], role, float(within))
        return [(StoredMessage.from_row(r), float(r["seconds_left"])) for r in rows]

    async def max_id(self) -> int:
        async with self.db.acquire() as conn:
            with schema_guard(self.namespace):
                return int(await conn.fetchval(Q["max_id"]))

    async def bus_key(self) -> bytes:
        """The namespace's key for signing notices (007_bus_chain.sql)."""
        async with self.db.acquire() as conn:
            with schema_guard(self.namespace):
                return str(await conn.fetchval(Q["bus_key"])).encode()

    async def organisation_id(self) -> str:
        """The organisation's id, part of every Redis channel name (015_delivery.sql)."""
        async with self.db.acquire() as conn:
            with schema_guard(self.namespace):
                return str(await conn.fetchval(Q["organisation_id"]))

    # ------------------------------------------------------------ cursors

    async def read_cursor(self, role: str) -> int:
        """The highest id `role` has handled; 0 for a role that never ran."""
        async with self.db.acquire() as conn:
            with schema_guard(self.namespace):
                value = await conn.fetchval(Q["read_cursor"], role)
        return int(value or 0)

    async def advance_cursor(self, role: str, last_message_id: int) -> None:
        """Move the cursor forward to `last_message_id`; a lower value is a no-op.

        The commit does not wait for the disk: a cursor lost in a crash only means
        messages are handed over again, and receivers deduplicate.
        """
        async with self.db.acquire() as conn:
            with schema_guard(self.namespace):
                await conn.execute(Q["advance_cursor"], role, last_message_id)
