"""MessageStore against the real Postgres: rows, audit rows, ordering, cursors, outbox."""

from __future__ import annotations

import anyio
import asyncpg
import pytest

from echo import db as dbmod
from echo.bus import Inserted, Message, MessageStore
from echo.config import Settings
from echo.errors import MigrationError
from tests.helpers import wait_until


def msg(subject: str = "Plan", **kw: object) -> Message:
    return Message.build(from_role="cto", subject=subject, **kw)


async def test_insert_writes_row_and_audit_in_one_statement(db: dbmod.Database) -> None:
    store = MessageStore(db)
    [one] = await store.insert([msg(body={"n": 1}, thread_id="t1")])
    batch = await store.insert([msg(f"m{i}", to_role="ceo") for i in range(5)])
    assert [b.id for b in batch] == list(range(one.id + 1, one.id + 6))
    async with db.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM messages WHERE id = $1", one.id)
        audits = await conn.fetch(
            "SELECT actor, action, subject_id, details FROM agent_actions "
            "WHERE subject_type = 'message' ORDER BY id"
        )
    assert row["body"] == {"n": 1} and row["thread_id"] == "t1" and row["published_at"] is None
    assert [a["subject_id"] for a in audits] == [str(i) for i in range(one.id, one.id + 6)]
    assert audits[0]["actor"] == "cto" and audits[0]["action"] == "message.published"
    assert audits[1]["details"]["to_role"] == "ceo"


async def test_a_retried_uuid_returns_the_existing_row(db: dbmod.Database) -> None:
    store = MessageStore(db)
    m = msg()
    [first] = await store.insert([m])
    [again, other] = await store.insert([m, msg("new")])
    assert (again.id, again.new) == (first.id, False)
    assert other.new and other.id > first.id
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM messages") == 2
        assert await conn.fetchval("SELECT count(*) FROM agent_actions") == 2


async def test_fetch_after_filters_channels_in_id_order(db: dbmod.Database) -> None:
    store = MessageStore(db)
    ids = [i.id for i in await store.insert(
        [msg("a"), msg("b", to_role="ceo"), msg("c", to_role="cto"), msg("d")]
    )]
    got = await store.fetch_after(0, ["messages:all", "messages:cto"])
    assert [m.id for m in got] == [ids[0], ids[2], ids[3]]
    assert [m.id for m in await store.fetch_after(ids[0], ["messages:all"], limit=1)] == [ids[3]]
    assert (await store.get(ids[1])).subject == "b"  # type: ignore[union-attr]
    assert await store.get(10**12) is None
    listed = await store.list_messages(role="ceo")
    assert [m.subject for m in listed] == ["a", "b", "d"]
    assert [m.subject for m in await store.list_messages(since=ids[1], limit=1)] == ["c"]


async def test_cursor_never_moves_backwards(db: dbmod.Database) -> None:
    store = MessageStore(db)
    assert await store.read_cursor("ceo") == 0
    await store.advance_cursor("ceo", 10)
    await store.advance_cursor("ceo", 4)
    assert await store.read_cursor("ceo") == 10
    await store.advance_cursor("ceo", 11)
    assert await store.read_cursor("ceo") == 11


async def test_concurrent_inserts_commit_in_id_order(db: dbmod.Database) -> None:
    """A transaction that drew a lower id blocks higher ids from committing before it,
    which is what makes a single cursor per role safe."""
    store = MessageStore(db)
    order: list[str] = []
    first_inserted = anyio.Event()

    async def slow() -> None:
        async with db.transaction() as conn:
            await store.insert([msg("slow")], conn=conn)
            first_inserted.set()
            await anyio.sleep(0.3)  # hold the transaction open: the point of the test
            order.append("slow")

    async def fast() -> None:
        await first_inserted.wait()
        await store.insert([msg("fast")])
        order.append("fast")

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow)
        tg.start_soon(fast)
    assert order == ["slow", "fast"]
    got = await store.fetch_after(0, ["messages:all"])
    assert [m.subject for m in got] == ["slow", "fast"]


async def test_relay_batches_do_not_overlap(db: dbmod.Database) -> None:
    store = MessageStore(db)
    await store.insert([msg(f"m{i}") for i in range(6)])
    async with db.transaction() as a, db.transaction() as b:
        first = await store.lock_unpublished(a, older_than=0, limit=4)
        second = await store.lock_unpublished(b, older_than=0, limit=4)
        assert len(first) == 4 and len(second) == 2
        assert not {r["id"] for r in first} & {r["id"] for r in second}
    async with db.transaction() as conn:
        assert await store.lock_unpublished(conn, older_than=60, limit=10) == []
    await store.mark_published([r["id"] for r in first])
    async with db.transaction() as conn:
        assert len(await store.lock_unpublished(conn, older_than=0, limit=10)) == 2


async def test_unmigrated_schema_says_what_to_run(settings: Settings) -> None:
    bare = settings.model_copy(update={"namespace": settings.namespace + "_none"})
    database = await dbmod.Database.open(bare.database, max_size=1)
    try:
        with pytest.raises(MigrationError, match="echoctl db migrate"):
            await MessageStore(database).insert([msg()])
    finally:
        await database.close()


async def test_prev_is_the_id_committed_just_before_even_across_waiting_writers(
    db: dbmod.Database,
) -> None:
    """A second writer waits on the ordering lock while the first holds it; its `prev`
    must be the first writer's id, committed while it waited (a stale snapshot would
    give the id before that, and a receiver would then skip a message)."""
    store = MessageStore(db)
    [zero] = await store.insert([msg("zero")])
    assert zero.prev == 0  # a new namespace: nothing before it
    second: list[Inserted] = []

    async def later() -> None:
        second.extend(await store.insert([msg("second"), msg("third")]))

    async with anyio.create_task_group() as tg, db.transaction() as first_conn:
        [first] = await store.insert([msg("first")], conn=first_conn)
        assert first.prev == zero.id
        tg.start_soon(later)
        async with db.acquire() as probe:
            await wait_until(lambda: waiting_on_advisory_lock(probe))
        # committed: the second writer goes on
    assert [s.prev for s in second] == [first.id, second[0].id]
    assert second[0].id > first.id


async def waiting_on_advisory_lock(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"))


async def test_no_prev_is_recorded_under_repeatable_read(db: dbmod.Database) -> None:
    store = MessageStore(db)
    async with db.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        [row] = await store.insert([msg()], conn=conn)
    assert row.prev is None


async def test_read_after_reports_the_settled_id_beyond_other_channels(db: dbmod.Database) -> None:
    store = MessageStore(db)
    [mine] = await store.insert([msg("for cto", to_role="cto")])
    [other] = await store.insert([msg("for chro", to_role="chro")])
    got, settled = await store.read_after(0, ["messages:all", "messages:cto"])
    assert [m.id for m in got] == [mine.id] and settled == other.id
    got, settled = await store.read_after(other.id, ["messages:cto"])
    assert got == [] and settled == other.id
