"""`ask` against real Postgres and Redis: a question to one role, its Answerer's
answer on the same thread, returned to the asker (echo/org/agent/asks.py). The answerer
runs in-process without a Claude decider, so its answers are the fallback's, which
say so; the real CLI answering through MCP is tests/e2e/test_mcp_runs.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from echo import db as dbmod
from echo.bus import Kind, MessageStore, Publisher
from echo.config import Settings
from echo.errors import EchoError, StoreUnavailable, UnknownRole, UsageError
from echo.org.agent.answers import FALLBACK_MARK, Answer
from echo.org.agent.asks import Answerer, answer_message, question
from echo.org.client import Client
from echo.org.client_base import NoAgentsUp
from echo.org.roles import load_role
from tests.helpers import wait_until
from tests.integration.org.test_client import heartbeat


async def count(db: dbmod.Database, kind: str) -> int:
    async with db.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM messages WHERE kind = $1", kind))


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(settings) as c:
        await c.open_publisher()  # in the fixture's task, not inside a test's task group
        yield c


async def test_a_question_is_answered_by_the_role_on_its_thread(
    settings: Settings, client: Client, db: dbmod.Database
) -> None:
    await heartbeat(db, "senior_architect")
    architect = Answerer(settings, db, load_role(settings.agents_dir, "senior_architect"))

    async def kick_when_asked() -> None:  # what the architect's participant does
        await wait_until(lambda: count(db, "question"), timeout=20, interval=0.05)
        architect.kick()

    async with anyio.create_task_group() as tg:
        await tg.start(architect.run)  # its first scan finds nothing: the kick wakes it
        tg.start_soon(kick_when_asked)
        got = await client.ask("senior_architect", "Should the API be versioned?\nDetails.",
                               within=20)
        tg.cancel_scope.cancel()
    assert got.role == "senior_architect" and got.source == "fallback"
    assert got.answer.startswith(FALLBACK_MARK) and "Senior Architect" in got.answer
    store = MessageStore(db)
    asked, reply = await store.get(got.question_id), await store.get(got.answer_id)
    assert asked is not None and reply is not None
    assert (asked.kind, asked.from_role, asked.to_role) == (Kind.QUESTION, "operator", "senior_architect")
    assert (reply.kind, reply.from_role, reply.to_role) == (Kind.ANSWER, "senior_architect", "operator")
    assert reply.thread_id == asked.thread_id and reply.body["reply_to"] == asked.id
    assert asked.subject == "Question from operator: Should the API be versioned?"
    assert architect.answered == 1


async def test_a_question_asked_while_the_role_was_down_is_answered_when_it_starts(
    settings: Settings, client: Client, db: dbmod.Database
) -> None:
    await heartbeat(db, "senior_architect")
    role = load_role(settings.agents_dir, "senior_architect")
    answered = anyio.Event()

    async def asker() -> None:
        await client.ask("senior_architect", "Which database?", within=30)
        answered.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(asker)  # asked, and nobody is answering yet
        await wait_until(lambda: count(db, "question"), timeout=30, interval=0.05)
        answerer = Answerer(settings, db, role)
        await tg.start(answerer.run)  # its first scan finds the open question
        with anyio.fail_after(30):
            await answered.wait()
        tg.cancel_scope.cancel()
    assert await count(db, "answer") == 1


async def test_an_outage_while_answering_is_tried_again_without_a_kick(
    settings: Settings, client: Client, db: dbmod.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle, the answerer waits only for a kick; a scan or an answer that met an outage
    is retried on its own, while the asker still waits."""
    await heartbeat(db, "senior_architect")
    answerer = Answerer(settings, db, load_role(settings.agents_dir, "senior_architect"))
    scans, publishes = [], []
    real_scan, real_publish = answerer.store.open_questions, Publisher.publish

    async def scan_failing_first(*args: Any, **kw: Any) -> Any:
        scans.append(1)
        if len(scans) == 2:  # the scan the question's kick starts
            raise StoreUnavailable("the database is down")
        return await real_scan(*args, **kw)

    async def publish_failing_first(self: Publisher, message: Any, **kw: Any) -> Any:
        if message.kind == Kind.ANSWER:
            publishes.append(1)
            if len(publishes) == 1:
                raise StoreUnavailable("the database is down")
        return await real_publish(self, message, **kw)

    monkeypatch.setattr(answerer.store, "open_questions", scan_failing_first)
    monkeypatch.setattr(Publisher, "publish", publish_failing_first)

    async def kick_once_asked() -> None:
        await wait_until(lambda: count(db, "question"), timeout=20, interval=0.05)
        answerer.kick()  # the one kick: every later scan is the answerer's own retry

    async with anyio.create_task_group() as tg:
        await tg.start(answerer.run)
        tg.start_soon(kick_once_asked)
        got = await client.ask("senior_architect", "Which database?", within=30)
        tg.cancel_scope.cancel()
    assert got.role == "senior_architect" and answerer.answered == 1
    assert len(scans) >= 4 and len(publishes) == 2  # failed scan, retry, failed answer, retry
    assert await count(db, "answer") == 1


async def test_an_answer_posted_twice_is_one_row(settings: Settings, db: dbmod.Database,
                                                 client: Client) -> None:
    await heartbeat(db, "senior_architect")
    sent = await client._publish(question("operator", "senior_architect", "twice?", 30,
                                          max_body_bytes=settings.max_body_bytes))
    asked = await MessageStore(db).get(sent.db_id)
    assert asked is not None
    said = Answer({"answer": "once"}, "llm")
    for _ in range(2):  # an agent killed after its post, before the next scan saw it
        await client._publish(answer_message(asked, "senior_architect", said))
    assert await count(db, "answer") == 1
    assert await MessageStore(db).open_questions("senior_architect", within=600) == []


async def test_an_expired_question_is_not_answered(settings: Settings, db: dbmod.Database,
                                                   client: Client) -> None:
    sent = await client._publish(question("operator", "senior_architect", "late?", 1,
                                          max_body_bytes=settings.max_body_bytes))
    async with db.acquire() as conn:  # asked two seconds ago by the database's clock
        await conn.execute("UPDATE messages SET created_at = now() - interval '2 seconds'"
                           " WHERE id = $1", sent.db_id)
    assert await MessageStore(db).open_questions("senior_architect", within=600) == []


async def test_nobody_answering_is_one_clear_error(client: Client, db: dbmod.Database) -> None:
    await heartbeat(db, "cto")
    with pytest.raises(EchoError, match=r"cto did not answer within 1s \(question \d+\)"):
        await client.ask("cto", "anyone?", within=1)


async def test_bad_questions_are_refused_before_anything_is_written(
    client: Client, db: dbmod.Database
) -> None:
    with pytest.raises(UnknownRole):
        await client.ask("janitor", "hello?")
    with pytest.raises(UsageError, match="cannot ask itself"):
        await client.ask("cto", "me?", sender="cto")
    with pytest.raises(UsageError, match="the question is empty"):
        await client.ask("cto", "  ")
    with pytest.raises(UsageError, match="between 1 and 600 seconds"):
        await client.ask("cto", "now?", within=0.5)
    with pytest.raises(NoAgentsUp, match="cto is not up to answer"):
        await client.ask("cto", "is anyone there?")
    assert await count(db, "question") == 0
