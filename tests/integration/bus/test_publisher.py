"""Dual write and the outbox relay, seen from outside: raw Redis, raw SQL, raw LISTEN."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path

import anyio

from echo import db as dbmod
from echo.bus import Inserted, Message, Notice, OutboxRelay, Published, Publisher, RedisTransport
from echo.config import Settings
from echo.embedded import EmbeddedRedis
from echo.errors import TransportUnavailable
from echo.listener import notify_channel
from echo.slices import BusSettings
from tests.conftest import running_redis
from tests.integration.bus.conftest import RawRedis, wait_until, wire_prefix


def msg(subject: str = "Plan", **kw: object) -> Message:
    return Message.build(from_role="cto", subject=subject, **kw)


async def published_at(db: dbmod.Database, db_id: int) -> object:
    async with db.acquire() as conn:
        return await conn.fetchval("SELECT published_at FROM messages WHERE id = $1", db_id)


async def test_publish_commits_announces_and_marks(
    bus: BusSettings, db: dbmod.Database, raw_redis: RawRedis
) -> None:
    async with Publisher(bus, db) as pub:
        result = await pub.publish(msg(body={"detail": "x"}), confirm=True)
        second = await pub.publish(msg("Next"), confirm=True)
    assert result.published and result.receivers == 1 and result.transport == "redis"
    channel, payload = await raw_redis.next()
    assert channel == f"{raw_redis.prefix}messages:all"
    assert payload["db_id"] == result.db_id and payload["subject"] == "Plan"
    # The notice carries the message, signed, and the id committed just before it.
    assert payload["body"] == {"detail": "x"} and len(payload["sig"]) == 32
    _, next_payload = await raw_redis.next()
    assert next_payload["db_id"] == second.db_id and next_payload["prev"] == result.db_id
    async with db.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM messages WHERE id = $1", result.db_id)
        audit = await conn.fetchrow(
            "SELECT * FROM agent_actions WHERE subject_type = 'message' AND subject_id = $1",
            str(result.db_id),
        )
    assert row["body"] == {"detail": "x"} and row["published_at"] is not None
    assert audit["action"] == "message.published" and audit["actor"] == "cto"


async def test_publish_many_is_one_batch(bus: BusSettings, db: dbmod.Database, raw_redis: RawRedis) -> None:
    async with Publisher(bus, db) as pub:
        result = await pub.publish_many([msg(f"m{i}") for i in range(50)], confirm=True)
        assert result.receivers == 50
    assert result.db_ids == list(range(result.db_ids[0], result.db_ids[0] + 50))
    seen = [(await raw_redis.next())[1]["db_id"] for _ in range(50)]
    assert seen == result.db_ids
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM messages WHERE published_at IS NULL") == 0


class CrashAfterCommit(RedisTransport):
    """Fails the PUBLISH step, as if the process died right after the commit."""

    async def publish_counts(
        self, notices: Sequence[Notice], *, key: bytes | None = None
    ) -> list[int]:
        raise TransportUnavailable("injected: crashed between commit and PUBLISH")


async def test_relay_delivers_what_a_crash_left_unpublished(
    bus: BusSettings, db: dbmod.Database, raw_redis: RawRedis
) -> None:
    async with Publisher(bus, db, CrashAfterCommit(bus, database=db)) as pub:
        lost = await pub.publish(msg("lost"), confirm=True)
    assert not lost.published and lost.receivers == 0
    assert await published_at(db, lost.db_id) is None
    transport = RedisTransport(bus, database=db)
    relay = OutboxRelay(bus, db, transport, grace=0.0, interval=0.05)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(relay.run)
            _, payload = await raw_redis.next()
            assert payload["db_id"] == lost.db_id and payload["subject"] == "lost"
            await wait_until(lambda: relay.relayed == 1)
            tg.cancel_scope.cancel()
    finally:
        await transport.aclose()
    assert await published_at(db, lost.db_id) is not None


async def test_redis_down_the_publish_still_succeeds_and_relay_catches_up(
    bus: BusSettings, db: dbmod.Database, own_redis: EmbeddedRedis
) -> None:
    s = bus.model_copy(update={"redis_url": own_redis.url})  # same pool, other Redis
    await anyio.to_thread.run_sync(own_redis.stop)
    async with Publisher(s, db) as pub:
        with anyio.fail_after(5):
            stored = await pub.publish(msg("while redis was down"), confirm=True)
    assert not stored.published and stored.receivers == 0
    assert await published_at(db, stored.db_id) is None

    await anyio.to_thread.run_sync(own_redis.start)
    raw = RawRedis(own_redis.url, await wire_prefix(db))
    await raw.start()
    transport = RedisTransport(s, database=db)
    try:
        relay = OutboxRelay(s, db, transport, grace=0.0)
        assert await relay.relay_once() == 1
        _, payload = await raw.next()
        assert payload["db_id"] == stored.db_id
        assert await relay.relay_once() == 0
    finally:
        await raw.close()
        await transport.aclose()
    assert await published_at(db, stored.db_id) is not None


async def test_notify_mode_announces_at_commit(notify_settings: Settings, tmp_path: Path) -> None:
    database = await dbmod.Database.open(notify_settings.database, max_size=2)
    conn = await dbmod.connect(notify_settings.database)
    got: list[dict] = []
    arrived = anyio.Event()

    def on_notify(_c: object, _pid: int, _channel: str, payload: str) -> None:
        got.append(json.loads(payload))
        arrived.set()

    try:
        await conn.add_listener(notify_channel(notify_settings.database, "messages:all"), on_notify)
        async with Publisher(notify_settings.bus, database) as pub:
            result = await pub.publish(msg("over NOTIFY"))
        assert result.transport == "notify" and result.receivers == 0 and result.published
        with anyio.fail_after(5):
            await arrived.wait()
        assert got[0]["db_id"] == result.db_id
        assert await published_at(database, result.db_id) is not None
        assert database.leaks == 0
    finally:
        await conn.close()
        await database.close()


async def test_unreachable_redis_fails_fast_without_the_password(
    bus: BusSettings, db: dbmod.Database
) -> None:
    from echo.embedded import free_port

    s = bus.model_copy(
        update={"redis_url": f"redis://:hunter2@127.0.0.1:{free_port()}/0"}
    )
    transport = RedisTransport(s, database=db)
    try:
        with anyio.fail_after(5):
            try:
                await transport.publish([Notice.of(msg(), 1)])
            except TransportUnavailable as exc:
                assert "hunter2" not in str(exc) and "***" in str(exc)
            else:
                raise AssertionError("publish to a closed port succeeded")
    finally:
        await transport.aclose()


async def test_password_protected_redis_with_the_password_in_the_url(
    bus: BusSettings, db: dbmod.Database,
) -> None:
    with running_redis("s3cret") as server:
        transport = RedisTransport(bus.model_copy(update={"redis_url": server.url}),
                                   database=db)
        try:
            assert await transport.publish([Notice.of(msg(), 1)]) == 0
        finally:
            await transport.aclose()


async def test_a_failed_relay_rolls_back_and_leaks_nothing(bus: BusSettings, db: dbmod.Database) -> None:
    """The relay holds its rows locked in a transaction while it publishes; a failed
    publish must roll back (rows stay unpublished) and the `db` fixture asserts at
    teardown that no connection went back to the pool inside that transaction."""
    relay = OutboxRelay(bus, db, CrashAfterCommit(bus, database=db), grace=0.0)
    async with Publisher(bus, db, CrashAfterCommit(bus, database=db)) as pub:
        await pub.publish(msg())
    with contextlib.suppress(TransportUnavailable):
        await relay.relay_once()
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM messages WHERE published_at IS NULL") == 1
    await relay.transport.aclose()


async def test_the_relay_of_an_agent_announces_on_a_pool_of_one_connection(
    bus: BusSettings, db: dbmod.Database, raw_redis: RawRedis
) -> None:
    """An agent's pool has one connection and its relay a transport of its own, which
    reads the organisation's id before its first PUBLISH. Read inside the relay's
    transaction, that read waited for the connection the transaction held: the relay,
    and with it every message of the agent, stalled for good at the first unannounced
    row (what the Redis outage chaos test met)."""
    async with Publisher(bus, db, CrashAfterCommit(bus, database=db)) as pub:
        lost = await pub.publish(msg("left for the relay"), confirm=True)
    one = await dbmod.Database.open(db.settings, min_size=0, max_size=1)
    transport = RedisTransport(bus, database=one)
    try:
        with anyio.fail_after(10):
            assert await OutboxRelay(bus, one, transport, grace=0.0).relay_once() == 1
        _, payload = await raw_redis.next()
        assert payload["db_id"] == lost.db_id
    finally:
        await transport.aclose()
        await one.close()


async def test_concurrent_publishes_are_combined_each_with_its_own_result(
    bus: BusSettings, db: dbmod.Database, raw_redis: RawRedis
) -> None:
    async with Publisher(bus, db) as pub:
        statements = 0
        insert = pub.store.insert

        async def counting(messages: Sequence[Message], **kw: object) -> list[Inserted]:
            nonlocal statements
            statements += 1
            return await insert(messages, **kw)  # type: ignore[arg-type]

        pub.store.insert = counting  # type: ignore[method-assign]
        results: dict[int, Published] = {}

        async def one(i: int) -> None:
            results[i] = await pub.publish(msg(f"c{i}"), confirm=True)

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)
    assert statements < 20  # group commit: later callers rode on one statement
    assert all(r.published and r.receivers == 1 and len(r.db_ids) == 1
               for r in results.values())
    async with db.acquire() as conn:
        subjects = {r["id"]: r["subject"] for r in await conn.fetch("SELECT * FROM messages")}
        assert await conn.fetchval("SELECT count(*) FROM messages WHERE published_at IS NULL") == 0
    assert {subjects[r.db_id] for r in results.values()} == {f"c{i}" for i in range(20)}
    assert all(subjects[results[i].db_id] == f"c{i}" for i in range(20))
    seen = [(await raw_redis.next())[1]["db_id"] for _ in range(20)]
    assert seen == sorted(subjects)  # announced once each, in id order


async def test_a_publish_returns_at_its_commit_and_is_announced_behind_it(
    bus: BusSettings, db: dbmod.Database, raw_redis: RawRedis
) -> None:
    """Unconfirmed publishes do not wait for Redis: with the PUBLISH held back they all
    return, committed; once it is released every one goes out once, in id order."""
    transport = Gated(bus, database=db)
    try:
        async with Publisher(bus, db, transport) as pub:
            results = [await pub.publish(msg(f"p{i}")) for i in range(5)]
            assert all(r.published is None and r.receivers is None for r in results)
            async with db.acquire() as conn:
                assert await conn.fetchval("SELECT count(*) FROM messages") == 5
            assert transport.calls == 1  # the first PUBLISH is held; the rest queue
            transport.gate.set()
        seen = [(await raw_redis.next())[1]["db_id"] for _ in range(5)]
    finally:
        await transport.aclose()
    assert seen == [r.db_id for r in results]
    async with db.acquire() as conn:  # leaving the publisher announced and marked them
        assert await conn.fetchval("SELECT count(*) FROM messages WHERE published_at IS NULL") == 0


class Gated(RedisTransport):
    """Holds the first PUBLISH until `gate` is set."""

    def __init__(self, settings: BusSettings, *, database: dbmod.Database) -> None:
        super().__init__(settings, database=database)
        self.gate = anyio.Event()
        self.calls = 0

    async def publish_counts(
        self, notices: Sequence[Notice], *, key: bytes | None = None
    ) -> list[int]:
        self.calls += 1
        if self.calls == 1:
            await self.gate.wait()
        return await super().publish_counts(notices, key=key)


async def test_a_cancelled_waiter_neither_stalls_nor_is_written(
    bus: BusSettings, db: dbmod.Database
) -> None:
    results: dict[str, Published] = {}
    gate = anyio.Event()
    inserts = 0
    async with Publisher(bus, db) as pub:
        insert = pub.store.insert

        async def held(messages: Sequence[Message], **kw: object) -> list[Inserted]:
            nonlocal inserts
            inserts += 1
            if inserts == 1:
                await gate.wait()  # the first round holds: later callers queue
            return await insert(messages, **kw)  # type: ignore[arg-type]

        pub.store.insert = held  # type: ignore[method-assign]

        async def one(name: str) -> None:
            results[name] = await pub.publish(msg(name))

        scope = anyio.CancelScope()

        async def cancellable() -> None:
            with scope:
                await one("cancelled")

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "first")
            await wait_until(lambda: inserts == 1)
            tg.start_soon(cancellable)  # queued first: next in line to lead
            tg.start_soon(one, "third")
            await wait_until(lambda: len(pub._batcher._queue) == 2)
            scope.cancel()
            await wait_until(lambda: len(pub._batcher._queue) == 1)
            gate.set()
    assert set(results) == {"first", "third"}
    assert results["third"].db_id > results["first"].db_id
    async with db.acquire() as conn:
        assert [r["subject"] for r in await conn.fetch("SELECT subject FROM messages ORDER BY id")
                ] == ["first", "third"]


async def test_publisher_runs_as_a_supervised_service(
    bus: BusSettings, db: dbmod.Database, raw_redis: RawRedis
) -> None:
    """`run(task_status)`: the publisher is a child like every other component; stopping
    it announces and marks what it committed."""
    from echo.runtime import Service

    pub = Publisher(bus, db)
    async with Service(pub.run, name="publisher") as service:
        result = await pub.publish(msg("As a service"))
        assert result.published is None  # returned at its commit
    assert service.exit_reason == "shutdown"
    _, payload = await raw_redis.next()
    assert payload["db_id"] == result.db_id
    assert await published_at(db, result.db_id) is not None


async def test_an_idle_relay_round_is_one_statement_and_no_transaction(
    bus: BusSettings, db: dbmod.Database, raw_redis: RawRedis
) -> None:
    """Six agents each run a relay every few seconds; with nothing left unannounced a
    round must cost one read, not a transaction of three statements (issue 20: the idle
    hot path), and it must still find what a crash left once there is some."""
    one = await dbmod.Database.open(db.settings, min_size=0, max_size=1)
    transport = RedisTransport(bus, database=one)
    said: list[str] = []
    try:
        async with one.acquire() as conn:  # the pool's only connection, reused below
            conn.add_query_logger(lambda q: said.append(q.query))
        relay = OutboxRelay(bus, one, transport, grace=0.0)
        assert await relay.relay_once() == 0
        assert len(said) == 1 and "BEGIN" not in said[0].upper(), said
        async with Publisher(bus, db, CrashAfterCommit(bus, database=db)) as pub:
            lost = await pub.publish(msg("left for the relay"), confirm=True)
        assert await relay.relay_once() == 1
        _, payload = await raw_redis.next()
        assert payload["db_id"] == lost.db_id
    finally:
        await transport.aclose()
        await one.close()
