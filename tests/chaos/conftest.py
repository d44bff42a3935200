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
from echo.logs import parse_line
from echo.org.node.state import log_file, read_org
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


#: The line a participant logs as it handles a message (echo/org/agent/participant.py), before the
#: commit of the inbox row, naming the attempt that the row names too.
_PROCESSED = re.compile(r"^(\w+) processed message (\d+) from ")

#: One `processed` line: (role, message id, attempt).
Line = tuple[str, int, str | None]


def processed_in_logs(s: Settings, roles: list[str]) -> Counter[Line]:
    """Every `processed` line of the roles' agent logs, which every incarnation of an
    agent appends to. No key protects this count: a message handled twice (across a
    crash, a restart, a redelivery) is counted twice."""
    seen: Counter[Line] = Counter()
    for role in roles:
        for raw in log_file(s, role).read_text(errors="replace").splitlines():
            parsed = parse_line(raw)
            match = _PROCESSED.match(parsed["message"])
            if match and match[1] == role:
                attempt = parsed["fields"].get("attempt")
                seen[(role, int(match[2]), None if attempt is None else str(attempt))] += 1
    return seen


def assert_processed_exactly_once(seen: Counter[Line], recorded: dict[tuple[str, int], str],
                                  roles: list[str], ids: list[int]) -> None:
    """Each (role, message) of `roles` x `ids` was processed exactly once: its inbox row
    (`recorded`: the attempt each row names) has exactly one line of that attempt. The
    lines of other attempts are attempts that died or failed before their commit and
    were handled again; they are not processings (echo/org/agent/participant.py, Participant)."""
    counts = Counter({(role, i): n for (role, i, attempt), n in seen.items()
                      if recorded.get((role, i)) == attempt})
    expected = [(role, i) for role in roles for i in ids]
    never = [pair for pair in expected if pair in recorded and counts[pair] == 0]
    assert not never, (f"{len(never)} (role, message) pairs recorded but never handled, "
                       f"e.g. {never[:5]}")
    twice = sorted(pair for pair in expected if counts[pair] > 1)
    assert not twice, f"{len(twice)} (role, message) pairs processed more than once, e.g. {twice[:5]}"
    missing = [pair for pair in expected if pair not in recorded]
    assert not missing, f"{len(missing)} (role, message) pairs never processed, e.g. {missing[:5]}"


async def assert_each_role_processed_each_once(
    s: Settings, database: dbmod.Database, roles: list[str], ids: list[int]
) -> None:
    """Every (role, message) was processed exactly once: agent_inbox holds its row (the
    primary key makes that at most one) and the agents' logs hold exactly one line of
    the attempt that row names (the logs, which no key dedupes). Messages the agents
    send themselves are not counted."""
    async with database.acquire() as conn:
        rows = await conn.fetch(
            "SELECT role, message_id, attempt FROM agent_inbox WHERE message_id = ANY($1)", ids)
    recorded = {(r["role"], r["message_id"]): r["attempt"] for r in rows}
    assert len(recorded) == len(rows)
    assert_processed_exactly_once(processed_in_logs(s, roles), recorded, roles, ids)
    unexpected = set(recorded) - {(role, i) for role in roles for i in ids}
    assert not unexpected, f"unexpected inbox rows: {sorted(unexpected)[:5]}"


async def assert_broadcast_refused(s: Settings, subject: str) -> str:
    """`echoctl broadcast` while the database is away: exit 1, one line on stderr that
    says the database is unavailable, no traceback, nothing on stdout. Returns the line."""
    during = await run_cli(s, "broadcast", subject, timeout=60)
    assert during.returncode == 1, during.stderr
    lines = during.stderr.strip().splitlines()
    assert len(lines) == 1 and "unavailable" in lines[0], during.stderr
    assert "Traceback" not in during.stderr and during.stdout.strip() == ""
    return lines[0]
