"""The same `echo` server (the operator's) over streamable HTTP at the console's
`/mcp`, behind the console's token exactly as the API is: a real console
(`echoctl serve`) on real Postgres and Redis, driven by the real `mcp` client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx2
import mcp
import pytest
from mcp.client.streamable_http import streamable_http_client

from echo.config import Settings
from tests.console_org import Console, console_alone
from tests.mcp_checks import bad_input_is_one_error_result, every_tool_acts, lists_tools_and_resources

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "test", "version": "1"}}}
STREAMS = {"Accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
async def console(mcp_settings: Settings) -> AsyncIterator[Console]:
    async with console_alone(mcp_settings) as running:
        yield running


@contextlib.asynccontextmanager
async def over_http(console: Console, token: str | None = None) -> AsyncIterator[mcp.Client]:
    headers = {"Authorization": f"Bearer {console.token if token is None else token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http, \
            mcp.Client(streamable_http_client(console.url.rstrip("/") + "/mcp", http_client=http)) as session:
        yield session


async def test_the_console_serves_every_tool_over_http(console: Console) -> None:
    async with over_http(console) as session:
        assert session.server_info is not None and session.server_info.name == "echo"
        await lists_tools_and_resources(session, console.settings)
        await every_tool_acts(session, console.settings)


async def test_bad_input_over_http_is_one_error_result(console: Console) -> None:
    async with over_http(console) as session:
        await bad_input_is_one_error_result(session, console.settings)


async def test_mcp_without_the_token_is_401(console: Console) -> None:
    for token in ("", "not-the-token"):
        async with console.client(token=token) as anonymous:
            answer = await anonymous.post("/mcp", json=INITIALIZE, headers=STREAMS)
            assert answer.status_code == 401, answer.text
            assert "send Authorization: Bearer <token>" in answer.json()["error"]
            assert (await anonymous.get("/mcp?token=nope", headers=STREAMS)).status_code == 401
    async with console.client() as c:  # the same request with the token is served
        answer = await c.post("/mcp", json=INITIALIZE, headers=STREAMS)
        assert answer.status_code == 200, answer.text
