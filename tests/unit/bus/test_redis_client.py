"""ECHO_REDIS_URL's three forms, and the client each one makes: a Sentinel URL is
parsed and checked when the settings load (one line, no password in it), and becomes
a client of the master the Sentinels name."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import SentinelConnectionPool

from echo.bus.redis_client import SentinelRedis, redis_client
from echo.bus.transport import RedisTransport
from echo.config import Settings, load_settings
from echo.errors import ConfigError
from echo.urls import SentinelTarget, parse_sentinel_url, redact_url


def test_a_sentinel_url_names_sentinels_service_db_and_credentials() -> None:
    assert parse_sentinel_url("redis+sentinel://:pa55word@s1:26379,s2:26380/mymaster/2") == SentinelTarget(
        sentinels=(("s1", 26379), ("s2", 26380)), service="mymaster", db=2, password="pa55word")
    target = parse_sentinel_url(
        "rediss+sentinel://alice:pw@[::1]:26379,s3/cache?sentinel_password=sp")
    assert target.sentinels == (("::1", 26379), ("s3", 26379))
    assert (target.service, target.db, target.username, target.password) == ("cache", 0, "alice", "pw")
    assert target.sentinel_password == "sp" and target.ssl


@pytest.mark.parametrize(("url", "says"), [
    ("redis+sentinel://s1:26379", "service"),
    ("redis+sentinel://s1:26379/", "service"),
    ("redis+sentinel://s1:notaport/mymaster", "host:port"),
    ("redis+sentinel://s1:26379,/mymaster", "host:port"),
    ("redis+sentinel://:pa55word@s1:99999/mymaster", "host:port"),
    ("redis+sentinel://s1:26379/mymaster/x", "database"),
    ("redis+sentinel://s1:26379/mymaster/0/extra", "service"),
    ("redis+sentinel://:pa55word@s1:26379/mymaster?pasword=1", "unknown option"),
])
def test_a_malformed_sentinel_url_is_one_config_error_without_the_password(
    url: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ECHO_REDIS_URL", raising=False)
    with pytest.raises(ConfigError) as info:
        load_settings(redis_url=url)
    text = str(info.value)
    assert "redis_url" in text and says in text and "redis+sentinel://" in text
    assert "pa55word" not in text and "\n" not in text


@pytest.mark.parametrize("url", [
    "redis+sentinel://:pa55word@s1:26379,s2:26380/mymaster/0",
    "rediss+sentinel://user:pa55word@s1:26379/mymaster",
    "redis+sentinel://s1:26379/mymaster?sentinel_password=pa55word",
])
def test_sentinel_passwords_are_redacted(url: str, tmp_path: Path) -> None:
    shown = redact_url(url)
    assert "pa55word" not in shown and "***" in shown and "s1:26379" in shown
    public = Settings(state_dir=tmp_path, redis_url=url).public()
    assert "pa55word" not in str(public)


async def test_the_transport_builds_a_client_of_the_sentinels_master(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path, redis_url="rediss+sentinel://:pw@s1:26379,s2:26380/mymaster/3")
    transport = RedisTransport(s.bus)
    client = transport.client
    assert isinstance(client, SentinelRedis)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "mymaster"
    assert issubclass(pool.connection_class, SSLConnection)
    assert (pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == (3, "pw")
    assert client.sentinels is not None
    assert [(c.connection_pool.connection_kwargs["host"], c.connection_pool.connection_kwargs["port"])
            for c in client.sentinels.sentinels] == [("s1", 26379), ("s2", 26380)]
    await transport.aclose()  # closes the Sentinel connections too (none were opened)


def test_a_plain_url_still_makes_a_plain_client(tmp_path: Path) -> None:
    client = redis_client(Settings(state_dir=tmp_path, redis_url="redis://127.0.0.1:6379/0").bus)
    assert not isinstance(client, SentinelRedis)
