"""What the chaos tests share: an organisation of real agent processes that a test
may break, and the checks that nothing was lost and nothing ran twice.

Every organisation here runs from the test's own state directory and namespace;
teardown stops it with `echoctl down` and then kills anything that is left, so a
failed test never leaves a process behind.
"""

from __future__ import annotations

from echo import db as dbmod
from echo.config import Settings
from echo.org.state import read_org
from tests.helpers import run_cli


def agent_pids(s: Settings, roles: list[str]) -> dict[str, int | None]:
    record = read_org(s)
    assert record is not None
    return {r: record.agents[r].pid for r in roles}


def agent_restarts(s: Settings, roles: list[str]) -> dict[str, int]:
    record = read_org(s)
    assert record is not None
    return {r: record.agents[r].restarts for r in roles}


async def inbox_count(database: dbmod.Database, ids: list[int]) -> int:
    async with database.acquire() as conn:
        return int(await conn.fetchval(
            "SELECT count(*) FROM agent_inbox WHERE message_id = ANY($1)", ids))


async def assert_each_role_processed_each_once(
    database: dbmod.Database, roles: list[str], ids: list[int]
) -> None:
    """agent_inbox holds exactly one row per (role, message) for every message sent
    (the rows of messages the agents may send themselves are not counted)."""
    async with database.acquire() as conn:
        rows = await conn.fetch(
            "SELECT role, message_id, count(*) AS n FROM agent_inbox "
            "WHERE message_id = ANY($1) GROUP BY 1, 2", ids)
    seen = {(r["role"], r["message_id"]) for r in rows}
    assert all(r["n"] == 1 for r in rows)
    expected = {(role, i) for role in roles for i in ids}
    missing = expected - seen
    assert not missing, f"{len(missing)} (role, message) pairs never processed, e.g. {sorted(missing)[:5]}"
    assert seen == expected, f"unexpected inbox rows: {sorted(seen - expected)[:5]}"


async def assert_broadcast_refused(s: Settings, subject: str) -> str:
    """`echoctl broadcast` while the database is away: exit 1, one line on stderr that
    says the database is unavailable, no traceback, nothing on stdout. Returns the line."""
    during = await run_cli(s, "broadcast", subject, timeout=60)
    assert during.returncode == 1, during.stderr
    lines = during.stderr.strip().splitlines()
    assert len(lines) == 1 and "unavailable" in lines[0], during.stderr
    assert "Traceback" not in during.stderr and during.stdout.strip() == ""
    return lines[0]
