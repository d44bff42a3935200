"""The one way ECHO makes a Redis client from `ECHO_REDIS_URL`.

A plain `redis://` or `rediss://` URL names one server. A Sentinel URL
(`redis+sentinel://[:password@]h1:26379,h2:26380/service/db`, or `rediss+sentinel://`
for TLS) names the Sentinels that watch a master: the client asks them for the
current master whenever it opens a connection (redis-py's `SentinelConnectionPool`),
so after a failover a reconnection lands on the promoted replica. A connection still
open to a demoted master answers writes with READONLY, which redis-py turns into a
connection error, and that connection is dropped: the caller's retry reaches the
new master. Transports keep their own reconnect loops; this module only says how a
client is built.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from echo.slices import BusSettings
from echo.urls import is_sentinel_url, parse_sentinel_url


class SentinelRedis(aioredis.Redis):
    """A client of the master that Sentinel names; closing it closes the Sentinel
    connections too (redis-py leaves those to whoever made the `Sentinel`)."""

    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            if self.sentinels is not None:
                await self.sentinels.aclose()


def redis_client(settings: BusSettings, **options: Any) -> aioredis.Redis:
    """A client for `settings.redis_url`; `options` are redis-py connection options
    (timeouts, retry) applied to the master's connections and, for timeouts, to the
    Sentinels' too."""
    url = settings.redis_url
    if not url:
        raise ValueError("no Redis configured (ECHO_REDIS_URL is unset)")
    if not is_sentinel_url(url):
        return aioredis.Redis.from_url(url, **options)
    target = parse_sentinel_url(url)
    sentinel_options: dict[str, Any] = {k: v for k, v in options.items() if k.startswith("socket_")}
    if target.sentinel_password:
        sentinel_options["password"] = target.sentinel_password
    if target.ssl:
        sentinel_options["ssl"] = True
    sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
        list(target.sentinels),
        sentinel_kwargs=sentinel_options,
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.ssl,
        **options,
    )
    client = sentinel.master_for(target.service, redis_class=SentinelRedis)
    assert isinstance(client, SentinelRedis)
    client.sentinels = sentinel
    return client
