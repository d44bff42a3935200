"""`echoctl mcp` over stdio, driven by the real `mcp` client library: a real
`python -m echo mcp` subprocess on real Postgres and Redis, as a Claude run's
`--mcp-config` starts it. The operator's server, a role's server (it sends as the
role), and a role's server whose lease passed on (the database refuses its writes)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from echo import db as dbmod
from echo.config import Settings
from echo.org.agent.lease_keeper import LeaseKeeper
from echo.org.client import Client
from echo.org.leases import Lease
from tests.helpers import run_cli
from tests.mcp_checks import (
    bad_input_is_one_error_result,
    every_tool_acts,
    lists_tools_and_resources,
    ok,
    refused,
    stdio,
)


@pytest.fixture
async def cto_lease(mcp_settings: Settings) -> AsyncIterator[tuple[Lease, LeaseKeeper]]:
    """The cto role's lease, held here (for a minute: no renewals) as its agent would."""
    keeper = LeaseKeeper(mcp_settings.leases.model_copy(update={"lease_seconds": 60.0}),
                         mcp_settings.database, "cto")
    await keeper.open()
    try:
        async with dbmod.connection(mcp_settings.database) as conn:  # the previous test's holder, gone
            await conn.execute("UPDATE role_leases SET expires_at = now() WHERE role = 'cto'")
        lease = await keeper.try_acquire()
        assert lease is not None
        yield lease, keeper
    finally:
        await keeper.close()


async def test_the_operators_server_lists_and_calls_every_tool(mcp_settings: Settings) -> None:
    async with stdio(mcp_settings) as session:
        assert session.server_info is not None and session.server_info.name == "echo"
        assert session.instructions and "operator" in session.instructions
        await lists_tools_and_resources(session, mcp_settings)
        await every_tool_acts(session, mcp_settings)


async def test_bad_input_is_one_error_result_and_the_server_goes_on(mcp_settings: Settings) -> None:
    async with stdio(mcp_settings) as session:
        await bad_input_is_one_error_result(session, mcp_settings)


async def test_a_roles_server_acts_as_that_role(
    mcp_settings: Settings, cto_lease: tuple[Lease, LeaseKeeper]
) -> None:
    lease, _ = cto_lease
    async with stdio(mcp_settings, "--role", "cto", "--fence", lease.fence) as session:
        names = {t.name for t in (await session.list_tools()).tools}
        # nothing that decides a request or raises a budget: only asking for one
        assert not {n for n in names if "approv" in n or "deny" in n}
        assert {n for n in names if "budget" in n} == {"request_budget"}
        sent = await ok(session, "send", to="ceo", subject="Need a decision", body="on the API")
        await every_tool_acts(session, mcp_settings, sender="cto")
    async with Client(mcp_settings) as client:
        [stored] = [m for m in await client.messages(role="ceo", limit=100) if m.id == sent["db_id"]]
    assert (stored.from_role, stored.to_role, stored.kind) == ("cto", "ceo", "direct")


async def test_a_roles_server_with_a_stale_epoch_writes_nothing(
    mcp_settings: Settings, cto_lease: tuple[Lease, LeaseKeeper]
) -> None:
    lease, _ = cto_lease
    async with stdio(mcp_settings, "--role", "cto", "--fence", lease.fence) as session:
        first = await ok(session, "send", to="ceo", subject="Before the takeover")
        # Another agent takes the role over: a newer epoch.
        async with dbmod.connection(mcp_settings.database) as conn:
            await conn.execute("UPDATE role_leases SET expires_at = now() WHERE role = 'cto'")
        newer = LeaseKeeper(mcp_settings.leases, mcp_settings.database, "cto")
        await newer.open()
        try:
            taken = await newer.try_acquire()
            assert taken is not None and taken.epoch == lease.epoch + 1
            async with Client(mcp_settings) as client:
                before = await client.latest_message_id()
                tasks = len(await client.tasks(limit=1000))
            for tool, arguments in (("send", {"to": "ceo", "subject": "After it"}),
                                    ("broadcast", {"subject": "After it"}),
                                    ("submit_task", {"description": "late work"}),
                                    ("request_budget", {"daily_usd": 9, "reason": "late"})):
                assert "no longer held by this agent" in await refused(session, tool, **arguments)
            assert [m["id"] for m in await ok(session, "messages", role="ceo", after=first["db_id"] - 1)] \
                == [first["db_id"]]  # reading still works; nothing was written
            async with Client(mcp_settings) as client:
                assert await client.latest_message_id() == before
                assert len(await client.tasks(limit=1000)) == tasks
                assert [a for a in await client.approvals() if a.reason == "late"] == []
        finally:
            await newer.close()


@pytest.mark.parametrize(("args", "says"), [  # every other case: tests/unit/mcp (Scope.of)
    (["--role", "janitor", "--fence", "janitor/1/abc"], "unknown role 'janitor'"),
    (["--role", "cto", "--fence", "cto/one/abc"], "is not a fence"),
])
async def test_a_bad_command_line_is_one_line_and_exit_2_before_serving(
    mcp_settings: Settings, args: list[str], says: str
) -> None:  # async: the module's async fixture is set up for it alone too (xdist)
    done = await run_cli(mcp_settings, "mcp", *args)
    assert done.returncode == 2, done
    assert done.stdout == ""  # stdout is the protocol: nothing but it, ever
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1
