"""The console API answers bad input with 400 and one line naming the field, never 500,
and writes nothing (issue 18, item 6: a NUL in `POST /api/v1/tasks` answered 500).

The console runs alone (`echoctl serve --port 0`, a real server on real Postgres and
Redis): no agent is needed to refuse input, so no organisation is started."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from echo import db as dbmod
from echo.config import Settings
from echo.db import drop_namespace, migrate
from tests.console_org import console_alone

pytestmark = pytest.mark.anyio

TABLES = ("agent_tasks", "workflows", "messages", "agent_actions")


@pytest.fixture(scope="module")
async def console_settings(pg_dsn: str, redis_url: str,
                           tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Settings]:
    """One namespace and one console for the module (a console's start costs seconds)."""
    from tests.conftest import make_settings

    s = make_settings(pg_dsn, redis_url, f"t_{int(time.time())}_{secrets.token_hex(4)}",
                      tmp_path_factory.mktemp("console-input") / "state")
    await migrate(s.database)
    yield s
    await drop_namespace(s.database)


@pytest.fixture
async def db(console_settings: Settings) -> AsyncIterator[dbmod.Database]:
    database = await dbmod.Database.open(console_settings.database, max_size=1)
    yield database
    await database.close()


@pytest.fixture(scope="module")
async def api(console_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with console_alone(console_settings) as console, console.client() as c:
        yield c


async def _counts(db: dbmod.Database) -> dict[str, int]:
    async with db.acquire() as conn:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}


CASES: list[tuple[str, str, str, dict[str, Any] | None, str]] = [
    ("NUL in description", "POST", "/api/v1/tasks", {"description": "a\u0000b"}, "description"),
    ("NUL in payload", "POST", "/api/v1/tasks", {"description": "x", "payload": {"t": "\u0000"}},
     "payload"),
    ("NUL in dedupe key", "POST", "/api/v1/tasks", {"description": "x", "dedupe_key": "\u0000"},
     "dedupe key"),
    ("1 MB description", "POST", "/api/v1/tasks", {"description": "d" * 1_000_000},
     "max_task_bytes"),
    ("NUL in role", "POST", "/api/v1/tasks", {"description": "x", "role": "c\u0000"}, "role"),
    ("empty workflow subject", "POST", "/api/v1/workflows", {"subject": ""}, "subject"),
    ("NUL in message subject", "POST", "/api/v1/messages", {"subject": "\u0000"}, "subject"),
    ("NUL in a role filter", "GET", "/api/v1/tasks?role=a%00", None, "role"),
    ("task id past bigint", "GET", f"/api/v1/tasks/{2**63}", None, "task id"),
    ("cancel past bigint", "POST", f"/api/v1/tasks/{2**64}/cancel", None, "task id"),
    ("message id past bigint", "GET", f"/api/v1/messages?after={2**63}", None, "since"),
    ("NUL in a workflow id", "GET", "/api/v1/workflows/wf-1%00", None, "workflow id"),
    ("unknown workflow repository", "POST", "/api/v1/workflows", {"subject": "x", "repo": "nope"},
     "unknown repository 'nope'"),
    ("bad workflow repository name", "POST", "/api/v1/workflows", {"subject": "x", "repo": "A B"},
     "repository"),
    ("chart of no minutes", "GET", "/api/v1/charts/finished?minutes=0", None, "minutes"),
    ("chart of two days", "GET", "/api/v1/charts/finished?minutes=2881", None, "minutes"),
    ("chart minutes not a number", "GET", "/api/v1/charts/finished?minutes=soon", None, "minutes"),
    ("spend chart of an unknown role", "GET", "/api/v1/charts/spend?role=nobody", None,
     "unknown role 'nobody'"),
    ("NUL in the spend chart's role", "GET", "/api/v1/charts/spend?role=c%00", None, "role"),
]


@pytest.mark.parametrize(("name", "method", "path", "body", "word"), CASES,
                         ids=[c[0] for c in CASES])
async def test_bad_input_is_400_naming_the_field_and_writes_nothing(
        api: httpx.AsyncClient, db: dbmod.Database, name: str, method: str, path: str,
        body: dict[str, Any] | None, word: str) -> None:
    before = await _counts(db)
    answer = await api.request(method, path, json=body)
    assert answer.status_code == 400, (answer.status_code, answer.text[:300])
    error = answer.json()["error"]
    assert word in error and "SQLSTATE" not in error and "\n" not in error, error
    assert await _counts(db) == before


async def test_the_charts_answer_good_queries(api: httpx.AsyncClient) -> None:
    spend = await api.get("/api/v1/charts/spend", params={"role": "cto"})
    assert spend.status_code == 200, spend.text
    assert [r["role"] for r in spend.json()["roles"]] == ["cto"]
    assert len(spend.json()["roles"][0]["hourly"]) == spend.json()["hour"] + 1
    finished = await api.get("/api/v1/charts/finished", params={"minutes": 5})
    assert finished.status_code == 200 and len(finished.json()["counts"]) == 5, finished.text


async def test_a_good_task_is_still_accepted(api: httpx.AsyncClient) -> None:
    answer = await api.post("/api/v1/tasks", json={"description": "d" * 60_000, "type": "noop"})
    assert answer.status_code == 201, answer.text
