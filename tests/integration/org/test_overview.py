"""`./cto` without --autonomous: what the role has seen lately and what it works on,
not just "0 unread" for an agent that keeps up with its inbox."""

from __future__ import annotations

import json

from echo.bus import Message, MessageStore, Publisher
from echo.config import Settings
from echo.db import Database
from echo.work import TaskQueue
from tests.helpers import run_cli


async def test_agent_once_shows_recent_messages_and_work(settings: Settings, db: Database) -> None:
    async with Publisher(settings.bus, db) as pub:
        sent = await pub.publish_many([
            Message.build(from_role="ceo", to_role="all", subject="Quarterly plan"),
            Message.build(from_role="ceo", to_role="cto", subject="Review the API migration"),
        ])
    store = MessageStore(db)
    await store.advance_cursor("cto", max(sent.db_ids))  # everything read: 0 unread
    task = await TaskQueue(db).enqueue("Write the migration runbook", task_type="noop", role="cto")

    shown = await run_cli(settings, "agent", "cto", "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["unread"] == []
    assert [m["subject"] for m in info["recent"]] == ["Quarterly plan", "Review the API migration"]
    assert all(m["read"] for m in info["recent"])
    assert [(t["task_id"], t["status"]) for t in info["tasks"]] == [(task.task_id, "pending")]

    text = await run_cli(settings, "agent", "cto")
    assert text.returncode == 0, text.stderr
    assert "0 unread" in text.stdout and "Review the API migration" in text.stdout
    assert "Write the migration runbook" in text.stdout
