"""Console benchmark: event latency to SSE clients, API throughput, memory.

- **Commit to browser**: a message is published (INSERT and commit, which writes its
  audit row and the NOTIFY of migration 013); the console's one LISTEN connection
  wakes, reads the feed once and writes the event to every connected SSE client.
  Latency is from the publish call to the client parsing the frame, p50 / p99, with
  1 and 50 clients (all in this process, so the 50 clients' parsing is counted too).
  Baseline, same run: a bare asyncpg LISTEN on a channel that the same INSERT's
  transaction NOTIFYs (the floor: commit, NOTIFY, delivery). Target p99 < 250 ms.
- **API requests per second**: `GET /api/v1/agents` and `POST /api/v1/messages` with
  8 concurrent keep-alive clients, against the CLI doing the same (`echoctl status
  --json`, `echoctl broadcast`), one process per operation as a script would.
- **Console RSS** idle and with 50 clients, and its Postgres connections (one LISTEN
  whatever the number of clients).

Run from the project root: `python -m bench.console` (what `make bench` does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import anyio
import asyncpg
import httpx
import psutil

from bench._common import bench_settings, emit, percentile
from echo import db as dbmod
from echo.bus import Message, Publisher
from echo.config import Settings
from echo.console.auth import token_path

EVENTS = 200
RATE = 50.0  # events per second
API_SECONDS = 5.0


def env_for(s: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHO_")}
    env.update(s.child_env())
    return env


async def start_console(s: Settings) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([sys.executable, "-m", "echo.console", "--port", "0"], env=env_for(s),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = await anyio.to_thread.run_sync(proc.stdout.readline)
    if not line.startswith(b"ECHO-READY console "):
        proc.kill()
        raise SystemExit(f"the console did not start: {line!r}")
    return proc, line.decode().split()[-1]


async def sse_latency(s: Settings, url: str, token: str, clients: int) -> list[float]:
    """Publish EVENTS messages at RATE/s; each client records when each one arrives."""
    sent: dict[str, float] = {}
    arrived: list[dict[str, float]] = [{} for _ in range(clients)]
    ready = [anyio.Event() for _ in range(clients)]
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients + 5)

    async def follow(i: int, http: httpx.AsyncClient) -> None:
        async with http.stream("GET", "/api/v1/events") as response:
            ready[i].set()
            async for line in response.aiter_lines():
                if line.startswith("data: ") and '"message.published"' in line:
                    data = json.loads(line[6:])
                    arrived[i][data["details"]["subject"]] = time.perf_counter()
                    if len(arrived[i]) >= EVENTS:
                        return

    database = await dbmod.Database.open(s.database, max_size=2)
    try:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as http, \
                Publisher(s.bus, database) as pub, anyio.create_task_group() as tg:
            for i in range(clients):
                tg.start_soon(follow, i, http)
            for event in ready:
                await event.wait()
            await anyio.sleep(0.5)
            for n in range(EVENTS):
                subject = f"latency {clients} {n}"
                sent[subject] = time.perf_counter()
                await pub.publish(Message.build(from_role="operator", subject=subject))
                await anyio.sleep(1 / RATE)
            with anyio.fail_after(60):
                while any(len(a) < EVENTS for a in arrived):
                    await anyio.sleep(0.05)
    finally:
        await database.close()
    return [(a[k] - sent[k]) * 1000 for a in arrived for k in a]


async def listen_latency(s: Settings) -> list[float]:
    """The floor: commit an INSERT whose transaction NOTIFYs; a bare LISTEN receives it."""
    dsn = s.database_url
    assert dsn
    listener = await asyncpg.connect(dsn)
    writer = await asyncpg.connect(dsn)
    got: dict[str, float] = {}
    await writer.execute("CREATE TEMP TABLE t (id serial, v text)")
    await listener.add_listener("bench_floor", lambda *a: got.__setitem__(a[3], time.perf_counter()))
    sent: dict[str, float] = {}
    try:
        for n in range(EVENTS):
            key = str(n)
            sent[key] = time.perf_counter()
            async with writer.transaction():
                await writer.execute("INSERT INTO t (v) VALUES ($1)", key)
                await writer.execute("SELECT pg_notify('bench_floor', $1)", key)
            await anyio.sleep(1 / RATE)
        with anyio.fail_after(30):
            while len(got) < EVENTS:
                await anyio.sleep(0.01)
    finally:
        await listener.close()
        await writer.close()
    return [(got[k] - sent[k]) * 1000 for k in sent]


async def api_rate(url: str, token: str, method: str, path: str, body: Any = None) -> float:
    done = 0
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        deadline = time.perf_counter() + API_SECONDS

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                answer = await http.request(method, path, json=body)
                assert answer.status_code < 300, answer.text
                done += 1

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(worker)
        return done / (time.perf_counter() - start)


def cli_rate(s: Settings, *args: str, runs: int = 5) -> float:
    start = time.perf_counter()
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-m", "echo", *args], env=env_for(s), capture_output=True,
                              check=False, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
    return runs / (time.perf_counter() - start)


async def console_connections(s: Settings) -> int:
    async with dbmod.connection(s.database) as conn:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            f"echo-console:{s.namespace}"))


async def main() -> None:
    async with bench_settings("console", redis=True) as s:
        floor = await listen_latency(s)
        proc, url = await start_console(s)
        try:
            token = token_path(s).read_text().strip()
            rss_idle = psutil.Process(proc.pid).memory_info().rss
            console_proc, here = psutil.Process(proc.pid), psutil.Process()
            for clients in (1, 50):
                cpu0, mine0 = sum(console_proc.cpu_times()[:2]), sum(here.cpu_times()[:2])
                ms = await sse_latency(s, url, token, clients)
                cpu = sum(console_proc.cpu_times()[:2]) - cpu0
                mine = sum(here.cpu_times()[:2]) - mine0
                for q, name in ((0.5, "p50"), (0.99, "p99")):
                    emit("console", f"commit to SSE client, {clients} client(s), {name} ms",
                         percentile(ms, q), baseline="bare LISTEN/NOTIFY after the commit, ms",
                         baseline_value=percentile(floor, q), events=len(ms), target="p99 < 250 ms",
                         console_cpu_ms_per_frame=round(cpu * 1000 / len(ms), 3),
                         clients_cpu_ms_per_frame=round(mine * 1000 / len(ms), 3),
                         load_average=round(os.getloadavg()[0], 2))

            # With 50 clients connected: memory and connections.
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60,
                                         limits=httpx.Limits(max_connections=60)) as http:
                streams = []
                for _ in range(50):
                    streams.append(await http.send(http.build_request("GET", "/api/v1/events"), stream=True))
                await anyio.sleep(1.5)
                rss_busy = psutil.Process(proc.pid).memory_info().rss
                held = await console_connections(s)
                for r in streams:
                    await r.aclose()
            emit("console", "console RSS, MB (idle / with 50 SSE clients)", rss_busy / 2**20,
                 baseline="idle console, MB", baseline_value=rss_idle / 2**20)
            emit("console", "console Postgres connections with 50 SSE clients", held,
                 baseline="pool of 4 + one LISTEN", baseline_value=5, listen_connections=1)

            agents = await api_rate(url, token, "GET", "/api/v1/agents")
            cli_status = cli_rate(s, "status", "--json")
            emit("console", "GET /api/v1/agents per s (8 concurrent)", agents,
                 baseline="`echoctl status --json` per s", baseline_value=cli_status)
            posts = await api_rate(url, token, "POST", "/api/v1/messages", {"subject": "bench"})
            cli_send = cli_rate(s, "broadcast", "bench from the CLI")
            emit("console", "POST /api/v1/messages per s (8 concurrent)", posts,
                 baseline="`echoctl broadcast` per s", baseline_value=cli_send)
        finally:
            proc.terminate()
            await anyio.to_thread.run_sync(proc.wait)


if __name__ == "__main__":
    anyio.run(main)
