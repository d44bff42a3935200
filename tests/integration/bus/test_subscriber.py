"""Subscriber end to end: exactly once, catch-up, Redis and Postgres outages, bad payloads."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio

from echo import db as dbmod
from echo.bus import MAX_NOTICE_BYTES, Message, Notice, Publisher, RedisTransport, StoredMessage, Subscriber
from echo.config import Settings
from echo.embedded import EmbeddedPostgres, EmbeddedRedis
from echo.errors import TransportUnavailable
from echo.slices import BusSettings
from tests.conftest import make_settings
from tests.integration.bus.conftest import RawRedis, Recorder, wait_until


def msg(subject: str, to: str = "all") -> Message:
    return Message.build(from_role="cto", to_role=to, subject=subject)


@contextlib.asynccontextmanager
async def live(
    bus: BusSettings, database: dbmod.Database, role: str, **kw: Any
) -> AsyncIterator[tuple[Subscriber, Recorder]]:
    """A running subscriber of `role` that records what it gets, once it is live."""
    rec = Recorder()
    sub = Subscriber(bus, database, role, rec, **kw)
    async with anyio.create_task_group() as tg:
        await tg.start(sub.run)
        await wait_until(lambda: sub.state == "live")
        yield sub, rec
        tg.cancel_scope.cancel()


async def test_live_delivery_filters_roles_and_counts_duplicates(
    bus: BusSettings, db: dbmod.Database, raw_redis: RawRedis
) -> None:
    async with live(bus, db, "ceo") as (sub, rec), Publisher(bus, db) as pub:
        first = await pub.publish(msg("to all"))
        await pub.publish(msg("to cto only", to="cto"))
        last = await pub.publish(msg("to ceo", to="ceo"))
        await rec.wait_for(2)
        # A relay re-announcing, or anyone replaying, a notice: dropped as a duplicate.
        dup = json.dumps({"db_id": first.db_id, "channel": "messages:all", "kind": "broadcast",
                          "from_role": "cto", "to_role": "all"})
        await raw_redis.send("messages:all", dup)
        await wait_until(lambda: sub.stats.duplicates >= 1)
    assert rec.ids == [first.db_id, last.db_id]
    assert [m.subject for m in rec.got] == ["to all", "to ceo"]
    assert sub.stats.delivered == 2 and sub.stats.caught_up
    assert await sub.store.read_cursor("ceo") == last.db_id


async def test_malformed_and_oversized_notices_are_dropped(
    bus: BusSettings, db: dbmod.Database, raw_redis: RawRedis
) -> None:
    async with live(bus, db, "cto") as (sub, rec), Publisher(bus, db) as pub:
        oversized = b"x" * (MAX_NOTICE_BYTES + 1)
        for bad in (b"not json", b"\xff\xfe", b'{"db_id": "x"}', b"[]", oversized):
            await raw_redis.send("messages:cto", bad)
        await wait_until(lambda: sub.stats.malformed == 5)
        ok = await pub.publish(msg("still alive"))
        await rec.wait_for(1)
    assert rec.ids == [ok.db_id]


async def test_a_subscriber_that_was_down_gets_everything_once(
    bus: BusSettings, db: dbmod.Database
) -> None:
    async with Publisher(bus, db) as pub:
        before = (await pub.publish_many([msg(f"b{i}") for i in range(5)])).db_ids
        first = Recorder()
        async with anyio.create_task_group() as tg:
            await tg.start(Subscriber(bus, db, "cto", first).run)
            assert first.ids == before  # caught up before `started`
            tg.cancel_scope.cancel()
        during = (await pub.publish_many([msg(f"d{i}", to="cto") for i in range(5)])).db_ids
    second = Recorder()
    sub = Subscriber(bus, db, "cto", second)
    async with anyio.create_task_group() as tg:
        await tg.start(sub.run)
        assert sub.stats.caught_up
        tg.cancel_scope.cancel()
    assert second.ids == during
    assert await sub.store.read_cursor("cto") == during[-1]


async def test_catch_up_is_bounded_by_the_timeout(bus: BusSettings, db: dbmod.Database) -> None:
    async with Publisher(bus, db) as pub:
        await pub.publish_many([msg(f"m{i}") for i in range(3)])
    release = anyio.Event()
    got: list[int] = []

    async def slow(message: object) -> None:
        await release.wait()
        got.append(message.id)  # type: ignore[attr-defined]

    sub = Subscriber(bus.model_copy(update={"catchup_timeout": 0.2}), db, "ceo", slow)
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(3):
            await tg.start(sub.run)
        assert not sub.stats.caught_up and sub.state == "starting"
        release.set()
        with anyio.fail_after(5):
            await sub.wait_caught_up()
        tg.cancel_scope.cancel()
    assert len(got) == 3


async def test_redis_restart_mid_stream_loses_nothing(
    bus: BusSettings, db: dbmod.Database, own_redis: EmbeddedRedis
) -> None:
    other = bus.model_copy(update={"redis_url": own_redis.url})
    sent: list[int] = []
    async with live(other, db, "cto") as (sub, rec), Publisher(other, db) as pub:
        for i in range(10):
            sent.append((await pub.publish(msg(f"a{i}"))).db_id)
        await anyio.to_thread.run_sync(own_redis.stop)
        for i in range(10):
            sent.append((await pub.publish(msg(f"b{i}"))).db_id)  # stored, not announced
        await rec.wait_for(20)  # the subscriber polls Postgres while Redis is away
        assert sub.state == "polling"
        await anyio.to_thread.run_sync(own_redis.start)
        await wait_until(lambda: sub.state == "live")
        for i in range(10):
            sent.append((await pub.publish(msg(f"c{i}"))).db_id)
        await rec.wait_for(30)
    assert rec.ids == sent  # each once, in order


async def test_postgres_outage_degrades_and_recovers(
    own_postgres: EmbeddedPostgres, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    s = make_settings(own_postgres.dsn, redis_url, namespace, tmp_path / "state")
    s = s.model_copy(update={"connect_timeout": 1.0, "command_timeout": 2.0})
    await dbmod.migrate(s.database)
    database = await dbmod.Database.open(s.database, max_size=2)
    rec = Recorder()
    sub = Subscriber(s.bus, database, "ceo", rec)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(sub.run)
            async with Publisher(s.bus, database) as pub:
                await pub.publish(msg("before"))
            await rec.wait_for(1)

            await anyio.to_thread.run_sync(own_postgres.stop, "immediate")
            cli = await anyio.to_thread.run_sync(broadcast_cli, s, "during the outage")
            assert cli.returncode == 1, cli.stderr
            lines = cli.stderr.strip().splitlines()
            assert len(lines) == 1 and "unavailable" in lines[0], cli.stderr
            sub.kick()
            await wait_until(lambda: sub.state == "degraded")
            assert sub.last_error and "unavailable" in sub.last_error

            await anyio.to_thread.run_sync(own_postgres.start)
            async with Publisher(s.bus, database) as pub:
                after = await pub.publish(msg("after"))
            await rec.wait_for(2, timeout=20)
            await wait_until(lambda: sub.state == "live")
            tg.cancel_scope.cancel()
        assert [m.subject for m in rec.got] == ["before", "after"] and rec.ids[1] == after.db_id
        assert database.leaks == 0
    finally:
        await database.close()


def broadcast_cli(s: Settings, subject: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHO_")}
    env.update(s.child_env())
    return subprocess.run(
        [sys.executable, "-m", "echo", "broadcast", subject],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )


async def test_notify_mode_end_to_end(notify_settings: Settings) -> None:
    database = await dbmod.Database.open(notify_settings.database, max_size=3)
    try:
        bus = notify_settings.bus
        async with live(bus, database, "cto", channels=["decisions:7"]) as (sub, rec), \
                Publisher(bus, database) as pub:
            a = await pub.publish(msg("notified"))
            b = await pub.publish(Message.build(
                from_role="ceo", subject="decided", channel="decisions:7", kind="decision"))
            await pub.publish(msg("not for cto", to="chro"))
            await rec.wait_for(2)
        assert rec.ids == [a.db_id, b.db_id]
        assert sub.stats.received >= 2 and sub.stats.malformed == 0
        assert sub.stats.live == 2  # from the signed notices on the namespace-wide channel
        assert database.leaks == 0
    finally:
        await database.close()


async def test_a_notice_that_arrives_after_the_read_still_prompts_the_next_read(
    bus: BusSettings, db: dbmod.Database,
) -> None:
    """The handler of the first message publishes a second: its notice arrives after
    the read that returned the first. It must prompt a read at once, not wait for
    the safety poll (10 x poll_interval = 50 s here)."""
    slow_poll = bus.model_copy(update={"poll_interval": 5.0})
    got: list[str] = []
    second = anyio.Event()
    async with anyio.create_task_group() as tg, Publisher(slow_poll, db) as pub:
        async def handler(message: StoredMessage) -> None:
            got.append(message.subject)
            if message.subject == "first":
                await pub.publish(msg("second"))
                await wait_until(lambda: sub.stats.received == 2)  # heard mid-delivery
            else:
                second.set()

        sub = Subscriber(slow_poll, db, "cto", handler)
        await tg.start(sub.run)
        await wait_until(lambda: sub.state == "live")
        await pub.publish(msg("first"))
        with anyio.fail_after(3):
            await second.wait()
        tg.cancel_scope.cancel()
    assert got == ["first", "second"]


async def test_a_notice_for_a_row_that_does_not_exist_leaves_no_phantom_lag(
    bus: BusSettings, db: dbmod.Database, raw_redis: RawRedis
) -> None:
    async with live(bus, db, "cto") as (sub, rec), Publisher(bus, db) as pub:
        forged = json.dumps({"db_id": 10**12, "channel": "messages:cto", "kind": "direct",
                             "from_role": "ceo", "to_role": "cto", "subject": "forged"})
        await raw_redis.send("messages:cto", forged)
        await wait_until(lambda: sub.stats.received == 1)
        real = await pub.publish(msg("real", to="cto"))
        await rec.wait_for(1)
        await wait_until(lambda: sub.stats.lag == 0)
    assert rec.ids == [real.db_id] and sub.cursor == real.db_id


def quiet(bus: BusSettings) -> BusSettings:
    """The same bus with a slow safety poll, so every table read in a test is one the
    subscriber chose to make."""
    return bus.model_copy(update={"poll_interval": 30.0})


async def test_live_messages_come_from_their_notices_without_a_read(
    bus: BusSettings, db: dbmod.Database,
) -> None:
    slow = quiet(bus)
    async with live(slow, db, "ceo") as (sub, rec), Publisher(slow, db) as pub:
        sent = []
        for i in range(10):
            sent.append((await pub.publish(msg(f"all {i}"))).db_id)
            last = await pub.publish(msg(f"cto {i}", to="cto"))  # not ceo's: skipped over
        await rec.wait_for(10)
        await wait_until(lambda: sub.cursor == last.db_id)
    assert rec.ids == sent and sub.stats.live == 10  # handed over from their notices
    assert sub.stats.reads <= 2  # the start and the connection's catch-up; none per message
    assert rec.got[0].body == {} and rec.got[0].subject == "all 0"


class HeldTransport(RedisTransport):
    """Holds every PUBLISH until `release` is set; `fail` makes it fail instead."""

    def __init__(self, bus: BusSettings, database: dbmod.Database, *, fail: bool = False) -> None:
        super().__init__(bus, database=database)
        self.release = anyio.Event()
        self.held = 0
        self.fail = fail

    async def publish_counts(
        self, notices: Sequence[Notice], *, key: bytes | None = None
    ) -> list[int]:
        if self.fail:
            raise TransportUnavailable("injected: died between commit and PUBLISH")
        self.held += 1
        await self.release.wait()
        return await super().publish_counts(notices, key=key)


async def test_notices_out_of_order_are_handed_over_in_id_order(
    bus: BusSettings, db: dbmod.Database
) -> None:
    """Two publishers: the first one's notice is late. The second one's waits in the
    chain (no read: the grace is long) until the first arrives."""
    still = quiet(bus)
    slow = HeldTransport(still, db)
    try:
        async with live(still, db, "cto", gap_grace=30.0) as (sub, rec), \
                Publisher(still, db, slow) as late, Publisher(still, db) as prompt:
            first = await late.publish(msg("first"))
            await wait_until(lambda: slow.held == 1)
            second = await prompt.publish(msg("second"))
            await wait_until(lambda: sub.stats.lag == second.db_id - sub.cursor and sub.stats.received >= 1)
            assert rec.ids == []  # the second waits for the first
            slow.release.set()
            await rec.wait_for(2)
    finally:
        await slow.aclose()
    assert rec.ids == [first.db_id, second.db_id]
    assert sub.stats.live == 2 and sub.stats.gaps == 0  # the chain ordered them, no read


async def test_a_gap_that_outlasts_its_grace_is_read_from_the_table(
    bus: BusSettings, db: dbmod.Database
) -> None:
    """The first publisher dies between its commit and its PUBLISH: the chain of the
    next notice points at a message nobody announced. The subscriber reads it."""
    still = quiet(bus)
    dead = HeldTransport(still, db, fail=True)
    try:
        async with live(still, db, "cto", gap_grace=0.05) as (sub, rec), \
                Publisher(still, db) as pub:
            async with Publisher(still, db, dead) as crashed:
                lost = await crashed.publish(msg("never announced"))
            after = await pub.publish(msg("after"))
            await rec.wait_for(2)
    finally:
        await dead.aclose()
    assert rec.ids == [lost.db_id, after.db_id]
    assert sub.stats.gaps == 1


async def test_a_forged_notice_is_never_handed_over(
    bus: BusSettings, db: dbmod.Database, raw_redis: RawRedis
) -> None:
    """Whoever can PUBLISH on Redis without the namespace's key can at most make a
    subscriber read the table: a notice signed with another key is not believed."""
    from datetime import UTC, datetime

    still = quiet(bus)
    async with live(still, db, "cto") as (sub, rec), Publisher(still, db) as pub:
        fake = Message.build(from_role="ceo", to_role="cto", subject="wire the money")
        forged = Notice.of(fake, sub.cursor + 1, prev=sub.cursor, created_at=datetime.now(UTC))
        await raw_redis.send("messages:cto", forged.encode(b"not the key"))
        await wait_until(lambda: sub.stats.unverified == 1)
        real = await pub.publish(msg("real", to="cto"))
        await rec.wait_for(1)
    assert [m.subject for m in rec.got] == ["real"] and rec.ids == [real.db_id]
