"""What the chaos tests share: an organisation of real agent processes that a test
may break, and the checks that nothing was lost and nothing ran twice.

Every organisation here runs from the test's own state directory and namespace;
teardown stops it with `echoctl down` and then kills anything that is left, so a
failed test never leaves a process behind.
"""

from __future__ import annotations

import re
from collections import Counter

from echo import db as dbmod
from echo.config import Settings
from echo.org.state import log_file, read_org
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


#: The line a participant logs each time it processes a message (echo/org/agent.py).
_PROCESSED = re.compile(r" (\w+) processed message (\d+) from ")


def processed_in_logs(s: Settings, roles: list[str]) -> Counter[tuple[str, int]]:
    """How often each role processed each message, from its agent's log, which every
    incarnation of the agent appends to. No key protects this count: a message handled
    twice (across a crash, a restart, a redelivery) is counted twice."""
    seen: Counter[tuple[str, int]] = Counter()
    for role in roles:
        for match in _PROCESSED.finditer(log_file(s, role).read_text(errors="replace")):
            if match[1] == role:
                seen[(role, int(match[2]))] += 1
    return seen


def assert_processed_at_most_once(seen: Counter[tuple[str, int]], roles: list[str],
                                  ids: list[int]) -> None:
    """No (role, message) processed twice, and the count is not vacuous: most pairs were
    seen (a pair can be missing only when an agent died, or its connection broke,
    between the inbox commit and the log line; the inbox then says it was processed)."""
    wanted = set(ids)
    counted = {pair: n for pair, n in seen.items() if pair[1] in wanted and pair[0] in roles}
    twice = sorted(pair for pair, n in counted.items() if n > 1)
    assert not twice, f"{len(twice)} (role, message) pairs processed more than once, e.g. {twice[:5]}"
    assert len(counted) >= 0.9 * len(roles) * len(ids), (
        f"only {len(counted)} of {len(roles) * len(ids)} processings logged")


async def assert_each_role_processed_each_once(
    s: Settings, database: dbmod.Database, roles: list[str], ids: list[int]
) -> None:
    """Every (role, message) was processed (agent_inbox holds its row: the primary key
    makes that at most one, so it proves "at least once"), and none more than once (the
    agents' logs, which no key dedupes). Messages the agents send themselves are not
    counted."""
    assert_processed_at_most_once(processed_in_logs(s, roles), roles, ids)
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
