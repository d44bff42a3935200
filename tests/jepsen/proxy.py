"""A userspace TCP link with delay, for kernels without `sch_netem`.

Each `Link` listens on one address and forwards to one upstream. Its delay comes from
a control file (JSON, `{"<link key>": {"delay_ms": 200, "jitter_ms": 50}}`) that the
nemesis rewrites and the proxy re-reads twice a second. Every chunk read is held
until `delay (+ jitter)` after it arrived and then written, in order, so the stream
is delayed, not reordered. Packet loss is not the proxy's business: the nemesis
drops packets with iptables' `statistic` match instead.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import SocketStream, TaskStatus

CHUNK = 65536


@dataclass(frozen=True)
class Link:
    key: str
    listen: tuple[str, int]
    upstream: tuple[str, int]


class Delays:
    """The delays the control file asks for, per link key (milliseconds)."""

    def __init__(self, control: Path) -> None:
        self.control = control
        self.current: dict[str, dict[str, Any]] = {}

    def read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.current = json.loads(self.control.read_text() or "{}")

    def delay_s(self, key: str, rng: random.Random) -> float:
        conf = self.current.get(key) or {}
        base = float(conf.get("delay_ms", 0))
        jitter = float(conf.get("jitter_ms", 0))
        return max(0.0, base + (rng.uniform(-jitter, jitter) if jitter else 0.0)) / 1000


async def _pipe(src: SocketStream, dst: SocketStream, key: str, delays: Delays) -> None:
    send, receive = anyio.create_memory_object_stream[tuple[float, bytes]](1024)
    rng = random.Random()

    async def reader() -> None:
        async with send:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                while True:
                    data = await src.receive(CHUNK)
                    await send.send((time.monotonic() + delays.delay_s(key, rng), data))

    async def writer() -> None:
        async with receive:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                async for due, data in receive:
                    wait = due - time.monotonic()
                    if wait > 0:
                        await anyio.sleep(wait)
                    await dst.send(data)
        with contextlib.suppress(Exception):
            await dst.send_eof()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(writer)


async def _handle(client: SocketStream, link: Link, delays: Delays) -> None:
    async with client:
        try:
            upstream = await anyio.connect_tcp(*link.upstream)
        except OSError:
            return
        async with upstream, anyio.create_task_group() as tg:
            tg.start_soon(_pipe, client, upstream, link.key, delays)
            tg.start_soon(_pipe, upstream, client, link.key, delays)


async def serve(links: list[Link], delays: Delays,
                *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Listen on every link until cancelled, holding chunks back as `delays` (its control
    file, re-read every half second) says."""
    delays.read()
    async with anyio.create_task_group() as tg:
        for link in links:
            listener = await anyio.create_tcp_listener(local_host=link.listen[0],
                                                       local_port=link.listen[1])

            async def accept(client: SocketStream, link: Link = link) -> None:
                await _handle(client, link, delays)

            tg.start_soon(listener.serve, accept)

        async def reread() -> None:
            while True:
                await anyio.sleep(0.5)
                delays.read()

        tg.start_soon(reread)
        task_status.started()
