"""Redis behind Sentinel, its master killed mid-stream (servers of the test's own).

A master, a replica and three Sentinels run on loopback; ECHO is given only the
Sentinels (`redis+sentinel://.../service/0`). Publishing goes on at a steady pace
while the master is SIGKILLed and the Sentinels promote the replica. The promise:
every message published before, during and after the failover is delivered exactly
once, in id order, to every subscriber; and once the Sentinels have a new master,
the publisher and the subscribers are on it (announcements reach all of them live
again), with no restart of anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from echo import db as dbmod
from echo.bus import Message, Publisher
from echo.config import Settings
from echo.errors import EchoError
from tests.conftest import unavailable
from tests.helpers import wait_until
from tests.integration.bus.test_subscriber import live
from tests.servers import SentinelGroup

pytestmark = pytest.mark.chaos

ROLES = ["ceo", "cto", "chro"]
PACE_S = 0.02  # one publish every 20 ms, before, during and after the failover


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A master, a replica and three Sentinels of this test's own, stopped afterwards."""
    group = SentinelGroup(tmp_path / "sentinel")
    try:
        group.start()
    except (EchoError, OSError) as exc:
        group.stop()
        unavailable(f"cannot start Redis with Sentinels ({exc})")
    yield group
    group.stop()


async def test_sentinel_failover_delivers_everything_once_and_moves_everyone_to_the_new_master(
    settings: Settings, sentinels: SentinelGroup
) -> None:
    group = sentinels
    await group.wait_ready()
    s = settings.model_copy(update={"redis_url": group.url})
    database = await dbmod.Database.open(s.database, max_size=4)
    sent: list[int] = []
    try:
        async with (
            live(s.bus, database, ROLES[0]) as (sub0, rec0),
            live(s.bus, database, ROLES[1]) as (sub1, rec1),
            live(s.bus, database, ROLES[2]) as (sub2, rec2),
            Publisher(s.bus, database) as pub,
        ):
            subs, recs = [sub0, sub1, sub2], [rec0, rec1, rec2]
            old = await group.master_port()
            first = await pub.publish(Message.build(from_role="operator", subject="first"),
                                      confirm=True)
            assert first.receivers == len(ROLES)  # live on the first master
            sent.extend(first.db_ids)
            stop = anyio.Event()

            async def stream() -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    out = await pub.publish(Message.build(from_role="operator", subject=f"m {n}"))
                    sent.extend(out.db_ids)
                    await anyio.sleep(PACE_S)  # a steady load, not a wait for state

            async with anyio.create_task_group() as tg:
                tg.start_soon(stream)
                await wait_until(lambda: len(sent) >= 25, timeout=30)
                connects = [sub._sub.connects for sub in subs if sub._sub is not None]
                assert len(connects) == len(ROLES)
                await anyio.to_thread.run_sync(group.kill, old)
                new = await group.wait_failed_over(old)
                assert new != old
                # Every subscriber resubscribed (on the new master: the old one is dead).
                await wait_until(lambda: all(
                    sub._sub is not None and sub._sub.connects > c and sub.state == "live"
                    for sub, c in zip(subs, connects, strict=True)), timeout=60, interval=0.05)
                live_before = [sub.stats.live for sub in subs]
                # And the publisher reaches them there: a confirmed announcement counts all.

                async def reaches_all() -> bool:
                    out = await pub.publish(
                        Message.build(from_role="operator", subject="after failover"), confirm=True)
                    sent.extend(out.db_ids)
                    return (out.receivers or 0) >= len(ROLES)

                await wait_until(reaches_all, timeout=60, interval=0.05)
                mark = len(sent)
                await wait_until(lambda: len(sent) >= mark + 25, timeout=30)
                stop.set()
            for rec in recs:
                await rec.wait_for(len(sent), timeout=60)
            for sub, before in zip(subs, live_before, strict=True):
                assert sub.stats.live > before  # delivered from Redis notices again
    finally:
        await database.close()
    for rec in recs:
        assert rec.ids == sorted(set(rec.ids)), "a message delivered twice or out of order"
        assert rec.ids == sorted(sent)
    assert await group.master_port() == new
