"""What one role is up to, for `./cto` (`echoctl agent cto` without --autonomous),
through `echo.org.client.Client.overview`.

"0 unread" says nothing about an agent that keeps up with its inbox, so the overview
shows what the role has seen lately (the last messages to it, to everyone, or from
it), what is still unread, and its work: the tasks running or waiting for it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from echo import db
from echo.bus import MessageStore, broadcast_channel, role_channel
from echo.config import Settings
from echo.org.health import read_health_file
from echo.org.roles import Role
from echo.work import AWAITING_APPROVAL, TaskQueue

_MESSAGE_FIELDS = {"id", "from_role", "to_role", "subject", "created_at", "kind", "thread_id"}
_TASK_FIELDS = ("task_id", "task_type", "task_description", "status", "retry_count", "created_at",
                "started_at")


class RoleOverview(BaseModel):
    """A role's state, cursor, unread and recent messages (each marked read or not), and
    its running, awaiting-approval and pending tasks."""

    role: str
    title: str
    state: str
    cursor: int
    unread: list[dict[str, Any]]
    recent: list[dict[str, Any]]
    tasks: list[dict[str, Any]]


async def role_overview(settings: Settings, database: db.Database, role: Role, *,
                        stale_after: float, recent: int = 5) -> RoleOverview:
    """The overview of `role`, read from `database` and the role's heartbeat file."""
    store = MessageStore(database)
    cursor = await store.read_cursor(role.name)
    unread = await store.fetch_after(cursor, [broadcast_channel(), role_channel(role.name)], limit=50)
    latest = await store.list_messages(role=role.name, limit=recent)
    queue = TaskQueue(database)
    work = [t for status in ("running", AWAITING_APPROVAL, "pending")
            for t in await queue.list(status=status, role=role.name, limit=20)]
    health = read_health_file(settings, role.name, stale_after)
    unread_ids = {m.id for m in unread}
    return RoleOverview(
        role=role.name,
        title=role.title,
        state=health.state if health else "not running",
        cursor=cursor,
        unread=[m.model_dump(mode="json", include=_MESSAGE_FIELDS) for m in unread],
        recent=[
            {**m.model_dump(mode="json", include=_MESSAGE_FIELDS), "read": m.id not in unread_ids}
            for m in latest
        ],
        tasks=[{k: t.get(k) for k in _TASK_FIELDS} for t in work],
    )
