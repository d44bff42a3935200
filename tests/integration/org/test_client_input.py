"""The client refuses bad input with a `UsageError` naming the field, before anything is
written (issue 18, item 6): what the CLI and the console API both call. Before, each
of these reached Postgres and came back as a SQLSTATE (or a row nobody could use)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from echo import db as dbmod
from echo.config import Settings
from echo.errors import UsageError
from echo.org.client import Client
from echo.work import NewTask, TaskQueue

pytestmark = pytest.mark.anyio

TABLES = ("agent_tasks", "workflows", "messages", "agent_actions")

CASES: list[tuple[str, Callable[[Client], Awaitable[Any]], str]] = [
    ("blank description", lambda c: c.submit_task("  \n "), "description"),
    ("NUL in description", lambda c: c.submit_task("a\x00b"), "description"),
    ("1 MB description", lambda c: c.submit_task("d" * 1_000_000), "max_task_bytes"),
    ("large payload", lambda c: c.submit_task("x", payload={"b": "y" * 70_000}), "max_task_bytes"),
    ("NUL in a payload key", lambda c: c.submit_task("x", payload={"k\x00": 1}), "payload"),
    ("Infinity in payload", lambda c: c.submit_task("x", payload={"r": math.inf}), "payload"),
    ("payload of a set", lambda c: c.submit_task("x", payload={"s": {1}}), "payload"),
    ("empty dedupe key", lambda c: c.submit_task("x", dedupe_key=""), "dedupe key"),
    ("NUL in dedupe key", lambda c: c.submit_task("x", dedupe_key="a\x00"), "dedupe key"),
    ("long dedupe key", lambda c: c.submit_task("x", dedupe_key="k" * 201), "dedupe key"),
    ("bad role", lambda c: c.submit_task("x", role="cto\x00"), "role"),
    ("blank workflow subject", lambda c: c.start_workflow("   ", roles=["cto"]), "subject"),
    ("NUL in workflow subject", lambda c: c.start_workflow("a\x00", roles=["cto"]), "subject"),
    ("NaN decider timeout",
     lambda c: c.start_workflow("x", roles=["cto"], decider_timeout=math.nan), "decider timeout"),
    ("infinite phase timeout",
     lambda c: c.start_workflow("x", roles=["cto"], phase_timeout=math.inf), "phase timeout"),
    ("rounds", lambda c: c.start_workflow("x", roles=["cto"], rounds=0), "rounds"),
    ("unknown role asked", lambda c: c.start_workflow("x", roles=["nobody"]), "nobody"),
    ("NUL in a workflow body", lambda c: c.start_workflow("x", body="\x00", roles=["cto"]), "body"),
    ("task id past bigint", lambda c: c.task(2**63), "task id"),
    ("task id zero", lambda c: c.cancel_task(0), "task id"),
    ("negative task id", lambda c: c.retry_task(-5), "task id"),
    ("NUL in a role filter", lambda c: c.tasks(role="a\x00"), "role"),
    ("message id past bigint", lambda c: c.messages(after=2**64), "since"),
    ("NUL in a workflow id", lambda c: c.workflow("wf-1\x00"), "workflow id"),
    ("blank workflow id", lambda c: c.cancel_workflow(""), "workflow id"),
]


async def _counts(db: dbmod.Database) -> dict[str, int]:
    async with db.acquire() as conn:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}


@pytest.mark.parametrize(("name", "call", "word"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_a_usage_error_naming_the_field_and_writes_nothing(
        settings: Settings, db: dbmod.Database, name: str,
        call: Callable[[Client], Awaitable[Any]], word: str) -> None:
    before = await _counts(db)
    async with Client(settings) as client:
        with pytest.raises(UsageError) as info:
            await call(client)
    text = str(info.value)
    assert word in text and "\n" not in text and "SQLSTATE" not in text, text
    assert await _counts(db) == before


async def test_the_queue_applies_the_organisations_limit_too(settings: Settings) -> None:
    # What agents enqueue (a decision's tasks) meets the same limit as a person's submit.
    small = settings.model_copy(update={"max_task_bytes": 2048})
    database = await dbmod.Database.open(small.database, max_size=1)
    try:
        queue = TaskQueue(database, max_task_bytes=small.work.max_task_bytes)
        with pytest.raises(UsageError, match="max_task_bytes=2048"):
            await queue.enqueue_many([NewTask("x" * 3000)])
        with pytest.raises(UsageError, match="delay"):
            await TaskQueue(database).enqueue("x", delay=math.nan)
        made = await TaskQueue(database).enqueue("x" * 2000, payload={"n": 1})
        assert made.created
    finally:
        await database.close()
