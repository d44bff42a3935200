"""What the console reads and changes, through the organisation's own stores.

The console holds no SQL: every call here goes to a function of `echo.bus`,
`echo.work` or `echo.org` (the same ones the CLI uses), on one small pool the
console opens at start. This module is the one seam between the HTTP layer and
the organisation, so the HTTP layer can move onto `echo.org.client` by changing
this file alone.
"""

from __future__ import annotations

from typing import Any

from echo import db
from echo.bus import Message, MessageStore, Publisher
from echo.bus.envelope import ALL, NON_AGENT_SENDERS, Kind, check_role
from echo.config import Settings
from echo.errors import NotFound, UsageError
from echo.org import control
from echo.org import workflow as wf
from echo.org.roles import role_names
from echo.work import STATUSES, NewTask, TaskQueue


class ConsoleData:
    """The console's view of one organisation (one pool, one publisher)."""

    def __init__(self, settings: Settings, database: db.Database, publisher: Publisher | None) -> None:
        self.settings = settings
        self.db = database
        self.publisher = publisher
        self.queue = TaskQueue(database)
        self.messages = MessageStore(database)

    # ------------------------------------------------------------------ agents
    async def status(self) -> dict[str, Any]:
        """The organisation and each agent, as `echoctl status --json` shows them."""
        from echo.commands.org import collect_status  # moves to echo.org.client

        return await collect_status(self.settings)

    async def restart(self, role: str) -> dict[str, Any]:
        """Restart one agent through the organisation's control socket (not a crash)."""
        check_role(role, self.settings.agents_dir)
        answer = await control.request(self.settings, {"command": "restart", "role": role})
        return {"role": role, "pid": answer.get("pid")}

    # ------------------------------------------------------------------ messages
    async def list_messages(self, *, after: int | None, limit: int, role: str | None) -> list[dict[str, Any]]:
        if role is not None:
            check_role(role, self.settings.agents_dir, allow=NON_AGENT_SENDERS)
        found = await self.messages.list_messages(role=role, since=after, limit=limit)
        return [m.model_dump(mode="json") for m in found]

    async def publish(self, *, subject: str, body: str | None, sender: str, to: str) -> dict[str, Any]:
        """A broadcast (`to` = all) or a direct message; returns at the commit."""
        check_role(sender, self.settings.agents_dir, allow=NON_AGENT_SENDERS)
        check_role(to, self.settings.agents_dir, allow=(ALL,))
        message = Message.build(
            from_role=sender, to_role=to, subject=subject,
            kind=Kind.BROADCAST if to == ALL else Kind.DIRECT,
            body={} if body is None else {"text": body},
            max_body_bytes=self.settings.max_body_bytes,
        )
        if self.publisher is None:
            raise UsageError("this view is read-only: it has no publisher")
        result = await self.publisher.publish(message)
        return {"db_id": result.db_id, "channel": message.channel, "uuid": str(message.uuid)}

    # ------------------------------------------------------------------ workflows
    async def start_workflow(self, *, subject: str, body: str, sender: str, rounds: int, quorum: str,
                             decider_timeout: float, phase_timeout: float) -> dict[str, Any]:
        check_role(sender, self.settings.agents_dir, allow=NON_AGENT_SENDERS)
        known = role_names(self.settings.agents_dir)
        if not known:
            raise UsageError(f"no roles found under {self.settings.agents_dir}; set ECHO_AGENTS_DIR")
        roles = await wf.live_roles(self.db, known)
        started = await wf.start(
            self.db, subject=subject, body=body, started_by=sender, roles=roles, rounds=rounds,
            quorum=quorum, decider_timeout=decider_timeout, phase_timeout=phase_timeout,
        )
        return {"workflow_id": started.workflow_id, "message_id": started.message_id, "roles": started.roles}

    async def _rows(self, query: str, *args: Any) -> list[dict[str, Any]]:
        async with self.db.acquire() as conn:
            return [dict(r) for r in await conn.fetch(wf.Q[query], *args)]

    async def list_workflows(self, limit: int) -> list[dict[str, Any]]:
        return await self._rows("list", limit)

    async def show_workflow(self, workflow_id: str) -> dict[str, Any]:
        from echo.commands.workflow import snapshot  # moves to echo.org.client

        return await snapshot(self.db, f"wf-{workflow_id}" if workflow_id.isdigit() else workflow_id)

    async def decisions(self, limit: int) -> list[dict[str, Any]]:
        return await self._rows("decisions", limit)

    # ------------------------------------------------------------------ tasks
    async def submit(self, task: NewTask) -> dict[str, Any]:
        if task.role is not None:
            check_role(task.role, self.settings.agents_dir)
        task.check()
        made = (await self.queue.enqueue_many([task]))[0]
        return {"task_id": made.task_id, "created": made.created}

    async def list_tasks(self, *, status: str | None, role: str | None, limit: int) -> list[dict[str, Any]]:
        if status is not None and status not in STATUSES:
            raise UsageError(f"unknown status {status!r}; use {', '.join(STATUSES)}")
        return await self.queue.list(status=status, role=role, limit=limit)

    async def show_task(self, task_id: int) -> dict[str, Any]:
        row = await self.queue.get(task_id)
        row["history"] = await self.queue.history(task_id)
        return row

    async def cancel(self, task_id: int) -> str:
        return await self.queue.cancel(task_id, actor="console")

    async def retry(self, task_id: int) -> None:
        await self.queue.requeue(task_id, actor="console")

    async def task_counts(self) -> dict[str, int]:
        return await self.queue.counts()

    async def spend(self) -> list[dict[str, Any]]:
        return await self.queue.spend()

    async def message_count(self) -> int:
        return await self.messages.max_id()


__all__ = ["ConsoleData", "NotFound"]
