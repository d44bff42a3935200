"""Silent Redis partition benchmark: how long until a subscriber notices that Redis has
gone quiet, and until a message published meanwhile reaches it (issue 19, fault 5).

A redis-server of this run's own sits behind a loopback proxy (tests/servers.py's
`FreezableProxy`) that the run partitions: nothing crosses, nothing is closed (no RST,
no FIN), as when a network drops packets. One subscriber reads through the proxy; a
publisher reaches Redis directly and publishes one message right after the cut.

Figures (median of ROUNDS): from the cut until the subscriber's state is `polling`
(it noticed), and from the cut until the message published then is handed over (by a
Postgres read). Baseline, same run: the same with the keepalive of before (a PING
after 5 s of silence, given up after 15 s in all), one round.

Run from the project root: `python -m bench.partition` (what `make bench` does).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import anyio

from bench._common import bench_settings, emit
from echo import db as dbmod
from echo.bus import Message, Publisher, RedisTransport, StoredMessage, Subscriber
from echo.config import Settings
from echo.embedded import EmbeddedRedis
from tests.proxy import FreezableProxy

ROUNDS = int(os.environ.get("ECHO_BENCH_PARTITION_ROUNDS", "3"))
NOW = {"keepalive": 1.0, "keepalive_timeout": 1.0}  # RedisTransport's defaults
BEFORE = {"keepalive": 5.0, "keepalive_timeout": 10.0}  # 3 x 5 s of silence


async def until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


async def one_round(s: Settings, database: dbmod.Database, redis: EmbeddedRedis,
                    keepalive: dict[str, float]) -> tuple[float, float]:
    proxy = FreezableProxy("127.0.0.1", redis.port)
    behind = s.bus.model_copy(update={"redis_url": f"redis://127.0.0.1:{proxy.port}/0"})
    direct = s.bus.model_copy(update={"redis_url": redis.url})
    got: list[int] = []

    async def handler(message: StoredMessage) -> None:
        got.append(message.id)

    transport = RedisTransport(behind, database=database, **keepalive)
    sub = Subscriber(behind, database, "cto", handler, transport=transport)
    try:
        with proxy:
            async with anyio.create_task_group() as tg:
                await tg.start(sub.run)
                await until(lambda: sub.state == "live")
                async with Publisher(direct, database) as pub:
                    proxy.freeze()
                    cut = time.monotonic()
                    sent = (await pub.publish(Message.build(from_role="operator", subject="cut"))).db_id
                    noticed = delivered = None
                    while noticed is None or delivered is None:
                        if noticed is None and sub.state == "polling":
                            noticed = time.monotonic() - cut
                        if delivered is None and sent in got:
                            delivered = time.monotonic() - cut
                        await anyio.sleep(0.01)
                        if time.monotonic() - cut > 60:
                            raise TimeoutError("the partition was not noticed within 60 s")
                proxy.thaw()
                tg.cancel_scope.cancel()
    finally:
        await transport.aclose()
    return noticed, delivered


async def main() -> None:
    async with bench_settings("partition") as s:
        database = await dbmod.Database.open(s.database, max_size=4)
        redis = EmbeddedRedis()
        await anyio.to_thread.run_sync(redis.start)
        try:
            now = [await one_round(s, database, redis, NOW) for _ in range(ROUNDS)]
            before = await one_round(s, database, redis, BEFORE)
        finally:
            await anyio.to_thread.run_sync(redis.stop)
            await database.close()
    extra = {"rounds": ROUNDS, "poll_interval_s": s.poll_interval, **NOW}
    emit("partition", "silent_partition_noticed_s", statistics.median(n for n, _ in now),
         baseline="keepalive 5 s, 15 s of silence (before)", baseline_value=before[0], **extra)
    emit("partition", "message_during_partition_delivered_s", statistics.median(d for _, d in now),
         baseline="keepalive 5 s, 15 s of silence (before)", baseline_value=before[1], **extra)


if __name__ == "__main__":
    anyio.run(main)
