"""Helpers of the bus tests: a plain redis-py subscriber, a recording handler, polling."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
import pytest
import redis.asyncio as aioredis

from echo.bus import StoredMessage
from echo.config import Settings
from tests.helpers import wait_until

__all__ = ["RawRedis", "Recorder", "wait_until"]


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

    def __init__(self, url: str, namespace: str) -> None:
        self.client = aioredis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.namespace = namespace

    async def start(self) -> None:
        await self.pubsub.psubscribe(f"{self.namespace}:*")
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
        return int(await self.client.publish(f"{self.namespace}:{channel}", data))

    async def close(self) -> None:
        await self.pubsub.aclose()
        await self.client.aclose()


@pytest.fixture
async def raw_redis(settings: Settings) -> AsyncIterator[RawRedis]:
    assert settings.redis_url
    raw = RawRedis(settings.redis_url, settings.namespace)
    await raw.start()
    yield raw
    await raw.close()
