"""Two organisations on one Redis never hear each other (issue 18, item 9).

Redis pub/sub ignores the database number of a URL, so two organisations with the
same namespace (two Postgres databases here, as two separate deployments would be)
that share a Redis server used to share every channel: a broadcast in one counted
the other's subscribers as receivers. Each organisation's channels now carry its
own id (015_delivery.sql).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg

from echo import db as dbmod
from echo.bus import Message, Publisher, Subscriber
from echo.config import Settings
from echo.slices import BusSettings
from tests.integration.bus.conftest import Recorder, wait_until

ROLES = ["ceo", "cto", "chro"]


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def organisation(settings: Settings, name: str) -> AsyncIterator[dbmod.Database]:
    """A database of its own, same namespace as `settings`, migrated; dropped after."""
    admin = await asyncpg.connect(settings.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        s = settings.model_copy(update={"database_url": with_database(settings.database_url, name)})
        await dbmod.migrate(s.database)
        database = await dbmod.Database.open(s.database, max_size=4)
        try:
            yield database
        finally:
            await database.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@contextlib.asynccontextmanager
async def subscribers(
    bus: BusSettings, database: dbmod.Database
) -> AsyncIterator[list[tuple[Subscriber, Recorder]]]:
    """One live subscriber per role of ROLES, each with its own Redis subscription."""
    subs = [(Subscriber(bus, database, role, rec), rec) for role in ROLES for rec in [Recorder()]]
    async with anyio.create_task_group() as tg:
        for sub, _ in subs:
            await tg.start(sub.run)
        for sub, _ in subs:
            await wait_until(lambda sub=sub: sub.state == "live")
        yield subs
        tg.cancel_scope.cancel()


async def test_a_broadcast_reaches_only_its_own_organisation_on_a_shared_redis(
    settings: Settings,
) -> None:
    assert settings.redis_url  # one Redis, one namespace, two organisations
    bus = settings.bus
    tag = secrets.token_hex(4)
    async with organisation(settings, f"t_org_a_{tag}") as a, \
            organisation(settings, f"t_org_b_{tag}") as b, \
            subscribers(bus, a) as subs_a, subscribers(bus, b) as subs_b, \
            Publisher(bus, a) as pub_a, Publisher(bus, b) as pub_b:
        sent_a = await pub_a.publish(Message.build(from_role="operator", subject="for A"),
                                     confirm=True)
        assert sent_a.published and sent_a.receivers == len(ROLES)  # not 2 x len(ROLES)
        for _, rec in subs_a:
            await rec.wait_for(1)
        sent_b = await pub_b.publish(Message.build(from_role="operator", subject="for B"),
                                     confirm=True)
        assert sent_b.published and sent_b.receivers == len(ROLES)
        for _, rec in subs_b:
            await rec.wait_for(1)
        again = await pub_a.publish(Message.build(from_role="operator", subject="A again"),
                                    confirm=True)
        assert again.receivers == len(ROLES)
        for _, rec in subs_a:
            await rec.wait_for(2)
        # One Redis server delivers in publish order on each connection: had B's
        # subscriptions heard A's first broadcast, it would have come before B's own,
        # and had A's heard B's, before "A again".
        for subs, subjects in ((subs_a, ["for A", "A again"]), (subs_b, ["for B"])):
            for sub, rec in subs:
                assert [m.subject for m in rec.got] == subjects
                assert sub.stats.received == len(subjects), (
                    f"{sub.role} heard the other organisation")
        assert subs_b[0][0].stats.unverified == 0
