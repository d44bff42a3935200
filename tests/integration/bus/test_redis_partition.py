"""A silent Redis partition is noticed in seconds, and Postgres fills in (issue 19, fault 5).

A partition that drops packets closes nothing: no RST, no FIN, the subscription's
socket simply goes quiet. The subscriber used to notice only after 15 s of silence
(three 5 s keepalives) and, until then, counted itself `live` while messages waited
for the safety poll. Here the agent's Redis is reached through a proxy the test
partitions; the publisher reaches the same Redis directly (it is the subscriber that
is cut off), so the notices of messages published during the partition go out and
are lost on the way, and only Postgres can deliver them.
"""

from __future__ import annotations

import time

import anyio

from echo import db as dbmod
from echo.bus import Message, Publisher, Subscriber
from echo.config import Settings
from echo.embedded import EmbeddedRedis
from tests.integration.bus.conftest import Recorder, wait_until
from tests.proxy import FreezableProxy

#: Generous beside the 2 s it takes (keepalive 1 s + 1 s for the PONG), and well below
#: the 15 s of silence the old keepalive waited for.
NOTICE_WITHIN_S = 8.0


class Conditions:
    """A reporter (echo.degradation) that keeps the current problems."""

    def __init__(self) -> None:
        self.problems: dict[str, str] = {}

    def problem(self, component: str, reason: str) -> None:
        self.problems[component] = reason

    def resolved(self, component: str) -> None:
        self.problems.pop(component, None)


def msg(subject: str) -> Message:
    return Message.build(from_role="operator", subject=subject)


async def test_a_silent_partition_is_noticed_polled_through_and_healed(
    settings: Settings, own_redis: EmbeddedRedis, db: dbmod.Database
) -> None:
    proxy = FreezableProxy("127.0.0.1", own_redis.port)
    behind = settings.bus.model_copy(update={"redis_url": f"redis://127.0.0.1:{proxy.port}/0"})
    direct = settings.bus.model_copy(update={"redis_url": own_redis.url})
    conditions, rec = Conditions(), Recorder()
    sub = Subscriber(behind, db, "cto", rec, reporter=conditions)
    with proxy:
        async with anyio.create_task_group() as tg:
            await tg.start(sub.run)
            await wait_until(lambda: sub.state == "live")
            async with Publisher(direct, db) as pub:
                before = await pub.publish(msg("before"), confirm=True)
                assert before.receivers == 1  # the subscriber, through the proxy
                await rec.wait_for(1)
                assert "redis" not in conditions.problems

                proxy.freeze()
                cut = time.monotonic()
                await wait_until(lambda: sub.state == "polling", timeout=NOTICE_WITHIN_S, interval=0.02)
                noticed = time.monotonic() - cut
                print(f"\nsilent Redis partition noticed after {noticed:.2f}s")
                await wait_until(lambda: "redis" in conditions.problems, timeout=NOTICE_WITHIN_S)
                reason = conditions.problems["redis"]
                assert reason.startswith("Redis is unreachable, reading Postgres every"), reason
                assert "no answer to PING" in reason

                during = [await pub.publish(msg(f"during {i}"), confirm=True) for i in range(5)]
                assert all(d.published for d in during)  # Redis is up: only the agent is cut off
                await rec.wait_for(6)  # read from Postgres by polling
                assert sub.state == "polling" and "redis" in conditions.problems

                live_before = sub.stats.live
                proxy.thaw()
                await wait_until(lambda: sub.state == "live", timeout=30)
                await wait_until(lambda: "redis" not in conditions.problems)
                after = await pub.publish(msg("after"), confirm=True)
                assert after.receivers >= 1  # resubscribed (the stale one may not be gone yet)
                await rec.wait_for(7)
                assert sub.stats.live > live_before  # handed over from its notice again
            tg.cancel_scope.cancel()
    assert rec.ids == [before.db_id, *(d.db_id for d in during), after.db_id]
