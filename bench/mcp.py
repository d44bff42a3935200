"""MCP benchmark: what a tool call of the `echo` server costs beside the client call it wraps.

- **Tool call over stdio**: a real `python -m echo mcp` subprocess and the real `mcp`
  client library; `messages` (a read of the latest 20) and `send` (a direct message,
  stored and announced over Redis), CALLS each, one at a time. Baseline, same run: the
  same `Client` call in this process (`Client.messages`, `Client.broadcast`), so the
  ratio is what MCP adds: JSON-RPC over two pipes, argument validation, the result's
  JSON. Median and p95 in milliseconds.
- **Tool call over the console's streamable HTTP** (`/mcp`, with the token): the same
  two calls against a console started alone (`python -m echo.console --port 0`),
  beside the same `Client` baseline.
- **Start**: from spawning the server to the answer of its first `tools/list` (what
  every Claude run given the server waits for), beside `python -m echo --version`
  (the interpreter and the CLI's imports alone).
- **A run given the server**: one Claude task run (the real CLI against the fake API,
  one text turn) through the executor with the role's `echo` server (echo/org/agent/reach.py,
  as every run of a role gets it), beside the same run without it: what the server
  adds to every run's wall time (the CLI waits for it before its first turn).

Run from the project root: `python -m bench.mcp`.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp
from mcp import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from bench._common import bench_settings, emit, percentile
from bench.console import env_for, start_console
from echo.config import Settings
from echo.console.auth import token_path
from echo.db import Database
from echo.org.agent import reach
from echo.org.client import Client
from echo.org.roles import load_role
from echo.org.views import SendKind
from echo.work import ClaudeExecutor, ClaudeRunOptions, TaskQueue
from echo.work.claude_cli import LOCAL_CLAUDE
from tests.fakes.anthropic import FakeAnthropic, text

CALLS = 200
STARTS = 5
RUNS = 5


def server(s: Settings) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "echo", "mcp"], env=env_for(s))


async def timed(call: Callable[[], Awaitable[Any]], n: int = CALLS) -> list[float]:
    """Milliseconds of each of `n` calls, one after the other (after 10 unmeasured)."""
    for _ in range(10):
        await call()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def report(figure: str, mcp_ms: list[float], client_ms: list[float], baseline: str) -> None:
    emit("mcp", f"{figure}_median_ms", statistics.median(mcp_ms), baseline=f"{baseline}_median_ms",
         baseline_value=statistics.median(client_ms), p95_ms=round(percentile(mcp_ms, 0.95), 3),
         baseline_p95_ms=round(percentile(client_ms, 0.95), 3), calls=len(mcp_ms))


async def baselines(s: Settings) -> tuple[list[float], list[float]]:
    """The same calls through `Client` in this process: what MCP wraps."""
    async with Client(s) as client:
        async def direct() -> Any:
            return await client.broadcast("bench", "a word", to="cto", kind=SendKind.DIRECT)

        return await timed(lambda: client.messages(limit=20)), await timed(direct)


async def over(session: mcp.Client) -> tuple[list[float], list[float]]:
    async def call(tool: str, **arguments: Any) -> None:
        result = await session.call_tool(tool, arguments)
        assert not result.is_error, result.content

    read = await timed(lambda: call("messages", limit=20))
    return read, await timed(lambda: call("send", to="cto", subject="bench", body="a word"))


async def tool_calls(s: Settings) -> None:
    async with Client(s) as client:
        for i in range(50):
            await client.broadcast(f"seed {i}", "so that messages returns a full page", sender="ceo")
    baseline_read, baseline_send = await baselines(s)
    async with mcp.Client(server(s)) as session:
        read, send = await over(session)
    report("messages_stdio", read, baseline_read, "client_messages")
    report("send_stdio", send, baseline_send, "client_send")

    console, url = await start_console(s)
    try:
        headers = {"Authorization": f"Bearer {token_path(s).read_text().strip()}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http, \
                mcp.Client(streamable_http_client(url.rstrip("/") + "/mcp", http_client=http)) as session:
            read, send = await over(session)
    finally:
        console.terminate()
        console.wait(timeout=30)
    report("messages_http", read, baseline_read, "client_messages")
    report("send_http", send, baseline_send, "client_send")


async def starts(s: Settings) -> None:
    started, bare = [], []
    for _ in range(STARTS):
        t = time.perf_counter()
        async with mcp.Client(server(s)) as session:
            await session.list_tools()
            started.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        await anyio.to_thread.run_sync(lambda: subprocess.run(
            [sys.executable, "-m", "echo", "--version"], env=env_for(s), capture_output=True, check=True))
        bare.append((time.perf_counter() - t) * 1000)
    emit("mcp", "stdio_start_to_tools_list_median_ms", statistics.median(started),
         baseline="echoctl_version_median_ms", baseline_value=statistics.median(bare), starts=STARTS)


async def run_with_server(s: Settings) -> None:
    with FakeAnthropic() as api, tempfile.TemporaryDirectory() as home:
        api.script(text("done"))
        env = {**api.env(), "HOME": home, "CLAUDE_CONFIG_DIR": f"{home}/cfg"}
        local = s.model_copy(update={"claude_bin": str(LOCAL_CLAUDE), "state_dir": Path(home)})
        role = load_role(s.agents_dir, "cto")
        config = reach.write_config(local, "cto", "cto/1/bench")  # writes are never tried
        plain = ClaudeExecutor(local.claude, local.database, env=env, cwd=home, options=ClaudeRunOptions())
        served = ClaudeExecutor(local.claude, local.database, env=env, cwd=home,
                                options=ClaudeRunOptions(**reach.run_options(role, config)))
        async with Client(s) as client:
            ids = [(await client.submit_task(f"bench {i}", role="cto")).task_id
                   for i in range(2 * RUNS + 2)]
        db = await Database.open(s.database, min_size=0, max_size=2)
        try:
            tasks = await TaskQueue(db).claim([f"bench:1:{i}" for i in range(len(ids))],
                                              task_types=["claude"], roles=["cto"],
                                              lease_seconds=3600)
        finally:
            await db.close()
        await plain.execute(tasks.pop())  # warm-ups (first starts, caches)
        await served.execute(tasks.pop())
        bare, given = [], []
        for i in range(RUNS):
            for executor, into in ((plain, bare), (served, given)):
                t = time.perf_counter()
                await executor.execute(tasks[2 * i + (into is given)])
                into.append((time.perf_counter() - t) * 1000)
    emit("mcp", "run_with_echo_server_median_ms", statistics.median(given),
         baseline="same_run_without_server_median_ms", baseline_value=statistics.median(bare),
         runs=RUNS, added_ms=round(statistics.median(given) - statistics.median(bare), 1))


async def main() -> None:
    async with bench_settings("mcp") as s:
        await tool_calls(s)
        await starts(s)
        await run_with_server(s)


if __name__ == "__main__":
    anyio.run(main)
