"""Helpers of the bus tests: a plain redis-py subscriber, a recording handler, polling."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
import pytest
import redis.asyncio as aioredis

from echo import db as dbmod
from echo.bus import StoredMessage, wire_channel
from echo.bus.store import MessageStore
from echo.config import Settings
from tests.helpers import wait_until

__all__ = ["RawRedis", "Recorder", "wait_until", "wire_prefix"]


async def wire_prefix(database: dbmod.Database) -> str:
    """What the organisation's Redis channels start with: namespace and organisation id."""
    organisation = await MessageStore(database).organisation_id()
    return wire_channel(database.settings.namespace, organisation, "")


class Recorder:
    """A subscriber handler that remembers what it got and wakes waiters."""

    def __init__(self) -> None:
        self.got: list[StoredMessage] = []
        self._changed = anyio.Event()

    async def __call__(self, message: StoredMessage) -> None:
        self.got.append(message)
        self._changed.set()
        self._changed = anyio.Event()

    @property
    def ids(self) -> list[int]:
        return [m.id for m in self.got]

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        with anyio.fail_after(timeout):
            while len(self.got) < count:
                await self._changed.wait()


class RawRedis:
    """Plain redis-py, not ECHO's transport: what any outside client would see."""

    def __init__(self, url: str, prefix: str) -> None:
        """`prefix`: the organisation's (`wire_prefix`); everything under it is heard."""
        self.client = aioredis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.prefix = prefix

    async def start(self) -> None:
        await self.pubsub.psubscribe(f"{self.prefix}*")
        with anyio.fail_after(5):  # the confirmation: from here on nothing is missed
            while (await self.pubsub.get_message(timeout=1)) is None:
                pass

    async def next(self, timeout: float = 5.0) -> tuple[str, dict]:
        with anyio.fail_after(timeout):
            while True:
                msg = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if msg and msg["type"] == "pmessage":
                    return msg["channel"].decode(), json.loads(msg["data"])

    async def send(self, channel: str, data: bytes | str) -> int:
        return int(await self.client.publish(f"{self.prefix}{channel}", data))

    async def close(self) -> None:
        await self.pubsub.aclose()
        await self.client.aclose()


@pytest.fixture
async def raw_redis(settings: Settings, db: dbmod.Database) -> AsyncIterator[RawRedis]:
    assert settings.redis_url
    raw = RawRedis(settings.redis_url, await wire_prefix(db))
    await raw.start()
    yield raw
    await raw.close()
