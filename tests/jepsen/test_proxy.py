"""The link proxy that delays a host's traffic where the kernel has no `sch_netem`:
bytes pass through unchanged and in order, and the control file's delay holds each
chunk back (loopback only; no namespaces needed)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
from anyio.abc import SocketStream

from echo.embedded import free_port
from tests.helpers import wait_until
from tests.jepsen import proxy


async def _echo(stream: SocketStream) -> None:
    async with stream:
        try:
            while True:
                await stream.send(await stream.receive())
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass


async def _round_trip(port: int, payload: bytes) -> tuple[bytes, float]:
    started = time.monotonic()
    async with await anyio.connect_tcp("127.0.0.1", port) as conn:
        await conn.send(payload)
        got = b""
        with anyio.fail_after(30):
            while len(got) < len(payload):
                got += await conn.receive()
    return got, time.monotonic() - started


async def test_the_proxy_forwards_in_order_and_delays_on_demand(tmp_path: Path) -> None:
    upstream, front = free_port(), free_port()
    control = tmp_path / "proxy.json"
    control.write_text("{}")
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=upstream)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, _echo)
        delays = proxy.Delays(control)
        await tg.start(proxy.serve, [proxy.Link("1", ("127.0.0.1", front), ("127.0.0.1", upstream))],
                       delays)
        payload = bytes(range(256)) * 40
        got, _ = await _round_trip(front, payload)
        assert got == payload

        control.write_text(json.dumps({"1": {"delay_ms": 150}}))
        await wait_until(lambda: delays.current == {"1": {"delay_ms": 150}}, timeout=10,
                         interval=0.05)  # the proxy re-reads its control file
        got, took = await _round_trip(front, payload)
        assert got == payload
        assert took >= 0.3  # 150 ms each way: a floor, which load can only raise
        tg.cancel_scope.cancel()
