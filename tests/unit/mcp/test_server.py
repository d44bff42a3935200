"""The `echo` MCP server without Postgres: its scopes, its tool registry, and that
every refusal is one tool error result (the SDK's in-process client; bad arguments and
unknown roles are refused before the client opens a connection)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import mcp
import pytest

from echo.config import Settings
from echo.errors import ConfigError, UsageError
from echo.mcp import Scope, build_server
from echo.mcp.tools import TOOLS, Org, tool, tools_for
from echo.org.client import Client
from echo.org.leases import Lease
from echo.org.roles import ROLE_ECHO_TOOLS, load_role
from echo.paths import project_path

FENCE = "cto/3/0f1e2d3c4b5a69788796a5b4c3d2e1f0"


@pytest.fixture
async def settings(tmp_path: Path) -> Settings:
    # Nothing listens here: a test that reached the database would fail at once.
    return Settings(env="test", state_dir=tmp_path / "state", namespace="t_mcp_unit",
                    database_url="postgresql://nobody@127.0.0.1:9/none", connect_timeout=0.5)


@pytest.fixture
async def session(settings: Settings) -> AsyncIterator[mcp.Client]:
    async with Client(settings) as client, mcp.Client(
            build_server(settings, Scope(), lambda: client)) as session:
        yield session


async def error_line(session: mcp.Client, tool_name: str, **arguments: Any) -> str:
    result = await session.call_tool(tool_name, arguments)
    assert result.is_error
    [content] = result.content
    assert isinstance(content, mcp.types.TextContent) and "\n" not in content.text
    return content.text


def test_a_lease_parses_from_its_fence_and_nothing_else_does() -> None:
    assert Lease.parse(FENCE) == Lease("cto", FENCE.split("/")[2], 3)
    assert Lease.parse(FENCE).fence == FENCE
    for bad in ("cto/3", "cto/0/abc", "cto/-1/abc", "cto/x/abc", "Cto/1/abc", "cto/1/", "/1/abc",
                "cto/1/a/b", "cto/1/a b", ""):
        with pytest.raises(ValueError, match="is not a fence"):
            Lease.parse(bad)


def test_a_scope_needs_a_role_and_its_own_fence_together() -> None:
    agents = project_path("agents")
    assert Scope.of(agents, None, None) == Scope() and Scope().sender == "operator"
    role = Scope.of(agents, "cto", FENCE)
    assert (role.sender, role.fence, role.is_operator) == ("cto", FENCE, False)
    for args, says in ((("cto", None), "go together"), ((None, FENCE), "go together"),
                       (("janitor", "janitor/1/abc"), "unknown role 'janitor'"),
                       (("ceo", FENCE), "names role 'cto', not 'ceo'"),
                       (("cto", "cto/1"), "is not a fence")):
        with pytest.raises(UsageError, match=says):
            Scope.of(agents, *args)


def test_an_operator_only_tool_is_kept_out_of_a_roles_server() -> None:
    try:
        @tool(operator_only=True)
        async def overrule(org: Org, id: int) -> Any:
            """Approve a request."""
            return id

        assert "overrule" in {t.name for t in tools_for(Scope())}
        assert "overrule" not in {t.name for t in tools_for(Scope("cto", FENCE))}
    finally:
        TOOLS.pop("overrule")
    # what a role's file may name (echo/org/roles.py) is exactly what a role's server has
    assert {t.name for t in tools_for(Scope("cto", FENCE))} == set(ROLE_ECHO_TOOLS)


def test_a_roles_server_offers_only_the_echo_tools_its_file_allows(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    shutil.copytree(project_path("agents"), agents)
    role_file = agents / "cto" / "role.toml"
    role_file.write_text(role_file.read_text().replace(
        "[claude]\n", '[claude]\necho_tools = ["send", "thread"]\n', 1))
    scope = Scope.of(agents, "cto", FENCE)
    assert [t.name for t in tools_for(scope)] == ["send", "thread"]
    role_file.write_text(role_file.read_text().replace('"thread"', '"sned"'))
    with pytest.raises(ConfigError, match="unknown echo tool 'sned'; use some of: broadcast"):
        load_role(agents, "cto")


async def test_a_tool_added_is_listed_with_its_own_schema(settings: Settings) -> None:
    try:
        @tool
        async def echo_back(org: Org, words: str, times: int = 1) -> Any:
            """Say it back."""
            return {"said": " ".join([words] * times), "as": org.scope.sender}

        server = build_server(settings, Scope("cto", FENCE), lambda: None)  # type: ignore[arg-type,return-value]
        async with mcp.Client(server) as session:
            listed = {t.name: t for t in (await session.list_tools()).tools}
            assert listed["echo_back"].description == "Say it back."
            assert listed["echo_back"].input_schema["required"] == ["words"]
            result = await session.call_tool("echo_back", {"words": "hi", "times": 2})
            assert not result.is_error
            assert result.content[0].text == '{"said": "hi hi", "as": "cto"}'  # type: ignore[union-attr]
    finally:
        TOOLS.pop("echo_back")


async def test_every_refusal_is_one_line_and_the_server_answers_the_next(session: mcp.Client) -> None:
    assert "unknown role 'janitor'; known roles: ceo" in await error_line(
        session, "send", to="janitor", subject="x")
    assert "subject is empty" in await error_line(session, "broadcast", subject=" ")
    assert await error_line(session, "messages", limit=10_001) == (
        "bad argument limit: Input should be less than or equal to 10000 (the tool's input "
        "schema says what it takes)")
    missing = await error_line(session, "send")
    assert "bad argument to: Field required; subject: Field required" in missing
    assert "holds a NUL character" in await error_line(session, "submit_task", description="a\x00")
    assert "NUL" in await error_line(session, "messages", role="c\x00to")
    assert await error_line(session, "request_budget", daily_usd=1, reason="x") == \
        "Unknown tool: request_budget"  # a role's request: not on the operator's server
    assert "not a workflow id" in await error_line(session, "thread", workflow_id="")
    # And it still serves: tools/list answers after all of them.
    assert len((await session.list_tools()).tools) == len(tools_for(Scope()))


async def test_a_crash_is_not_shown_to_the_caller(settings: Settings) -> None:
    try:
        @tool
        async def broken(org: Org) -> Any:
            """Fails."""
            raise RuntimeError("secret internals")

        async with mcp.Client(build_server(settings, Scope(), lambda: None)) as session:  # type: ignore[arg-type,return-value]
            assert await error_line(session, "broken") == "Error executing tool broken"  # no "secret"
            assert await error_line(session, "broken") == "Error executing tool broken"  # still serving
    finally:
        TOOLS.pop("broken")
