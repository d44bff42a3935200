"""Bad input at the command line is a usage error (issue 18, item 6): exit 2, one line
naming the field, and nothing written. Before, Postgres found the mistakes: `workflow
start ""` exited 1 with SQLSTATE 23514, a NUL in `--payload` with 22P05. The other
cases of the same kind are checked on the client itself (test_client_input.py)."""

from __future__ import annotations

import json

import pytest

from echo import db as dbmod
from echo.config import Settings
from tests.helpers import run_cli

# Marked here, not only by the conftest hook, so that anyio sees it beside the parametrize.
pytestmark = pytest.mark.anyio

TABLES = ("agent_tasks", "workflows", "messages", "agent_actions")


async def _counts(db: dbmod.Database) -> dict[str, int]:
    async with db.acquire() as conn:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}


async def _beat(db: dbmod.Database, role: str = "cto") -> None:
    """A fresh heartbeat, as a running agent writes it: the workflow has someone to ask."""
    async with db.acquire() as conn:
        await conn.execute("INSERT INTO agent_health (role, host, pid, state, started_at) "
                           "VALUES ($1, 'test', 1, 'healthy', now())", role)


def _refused(done: object, *words: str) -> None:
    out = done.stderr.strip()  # type: ignore[attr-defined]
    assert done.returncode == 2, (done.returncode, done.stdout, out)  # type: ignore[attr-defined]
    assert len(out.splitlines()) == 1, out
    assert "SQLSTATE" not in out and "Traceback" not in out, out
    for word in words:
        assert word in out, (word, out)


@pytest.mark.parametrize(("argv", "words"), [
    (("tasks", "submit", "x", "--payload", '{"text": "a\\u0000b"}'), ("payload", "NUL")),
    (("tasks", "submit", "x", "--payload", '{"ratio": NaN}'), ("payload", "NaN")),
    (("tasks", "submit", "x" * 70_000), ("description", "max_task_bytes")),
    (("tasks", "show", "99999999999999999999"), ("task id",)),
    (("workflow", "start", ""), ("subject",)),
    (("workflow", "start", "x", "--phase-timeout", "inf"), ("phase",)),
    (("messages", "--since", "99999999999999999999"), ("since",)),
])
async def test_bad_input_exits_2_naming_the_field_and_writes_nothing(
        settings: Settings, db: dbmod.Database, argv: tuple[str, ...], words: tuple[str, ...]
) -> None:
    await _beat(db)  # an agent is up, so nothing but the input stops the command
    before = await _counts(db)
    _refused(await run_cli(settings, *argv), *words)
    assert await _counts(db) == before


async def test_down_refuses_a_negative_timeout(settings: Settings) -> None:
    _refused(await run_cli(settings, "down", "--timeout", "-1"), "--timeout")
    _refused(await run_cli(settings, "down", "--timeout", "nan"), "--timeout")


async def test_the_limits_leave_room_for_real_work(settings: Settings, db: dbmod.Database) -> None:
    # a long prompt and a payload just under the default limit are queued as before
    made = await run_cli(settings, "tasks", "submit", "y" * 60_000, "--payload",
                         json.dumps({"notes": "z" * 60_000}), "--json")
    assert made.returncode == 0, made.stderr
    task_id = json.loads(made.stdout)["task_id"]
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT length(task_description) FROM agent_tasks "
                                   "WHERE task_id = $1", task_id) == 60_000
