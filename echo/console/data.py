"""What the console reads and changes: the organisation's client, as JSON.

The console holds no SQL. Every operation goes through `echo.org.client.Client`,
the same API the CLI calls, on the one small pool the console opens at start. This
module is the one seam between HTTP and the organisation: it turns the client's
typed results into JSON-able dicts.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from echo.config import Settings
from echo.org.client import Client
from echo.org.inputs import normalise_workflow_id
from echo.work import NewTask


def _json(value: BaseModel) -> dict[str, Any]:
    return value.model_dump(mode="json")


class ConsoleData:
    """The console's view of one organisation, through one `Client`."""

    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.client = client

    # ------------------------------------------------------------------ agents
    async def status(self, *, remote: bool = True) -> dict[str, Any]:
        """The organisation and each agent, as `echoctl status --json` shows them."""
        return _json(await self.client.status(remote=remote))

    async def restart(self, role: str) -> dict[str, Any]:
        """Restart one agent through the organisation's control socket (not a crash)."""
        return {"role": role, "pid": await self.client.restart_agent(role)}

    # ------------------------------------------------------------------ messages
    async def list_messages(self, *, after: int | None, limit: int, role: str | None) -> list[dict[str, Any]]:
        return [_json(m) for m in await self.client.messages(role=role, after=after, limit=limit)]

    async def publish(self, *, subject: str, body: str | None, sender: str, to: str) -> dict[str, Any]:
        """A broadcast (`to` = all) or a direct message, stored and announced."""
        return _json(await self.client.broadcast(subject, body, sender=sender, to=to))

    # ------------------------------------------------------------------ workflows
    async def start_workflow(self, *, subject: str, body: str, sender: str, rounds: int, quorum: str,
                             decider_timeout: float, phase_timeout: float,
                             repo: str | None = None) -> dict[str, Any]:
        wf = await self.client.start_workflow(
            subject, body=body, sender=sender, rounds=rounds, quorum=quorum,
            decider_timeout=decider_timeout, phase_timeout=phase_timeout, repo=repo)
        return {"workflow_id": wf.id, "message_id": wf.message_id, "roles": wf.roles,
                "phase": str(wf.phase), "repo": (wf.repo or {}).get("name")}

    async def list_workflows(self, limit: int) -> list[dict[str, Any]]:
        return [_json(w) for w in await self.client.workflows(limit)]

    async def show_workflow(self, workflow_id: str) -> dict[str, Any]:
        return _json(await self.client.workflow(normalise_workflow_id(workflow_id)))

    async def cancel_workflow(self, workflow_id: str) -> str:
        return str(await self.client.cancel_workflow(workflow_id))

    async def decisions(self, limit: int) -> list[dict[str, Any]]:
        return [_json(d) for d in await self.client.decisions(limit)]

    # ------------------------------------------------------------------ tasks
    async def submit(self, task: NewTask) -> dict[str, Any]:
        made = await self.client.submit_task(
            task.description, role=task.role, priority=task.priority, timeout_seconds=task.timeout_seconds,
            max_retries=task.max_retries, task_type=task.task_type, dedupe_key=task.dedupe_key,
            payload=dict(task.payload))
        return _json(made)

    async def list_tasks(self, *, status: str | None, role: str | None, limit: int) -> list[dict[str, Any]]:
        return [_json(t) for t in await self.client.tasks(status=status, role=role, limit=limit)]

    async def show_task(self, task_id: int) -> dict[str, Any]:
        detail = await self.client.task(task_id)
        return {**_json(detail)["task"], "history": [_json(h) for h in detail.history],
                "events": [_json(e) for e in detail.events], "runs": [_json(r) for r in detail.runs],
                "approvals": [_json(a) for a in detail.approvals]}

    async def doing_now(self) -> list[dict[str, Any]]:
        return [_json(d) for d in await self.client.doing_now()]

    async def spend_chart(self, role: str | None) -> dict[str, Any]:
        return _json(await self.client.spend_chart(role=role))

    async def finished_chart(self, minutes: int) -> dict[str, Any]:
        return _json(await self.client.finished_chart(minutes=minutes))

    async def cancel(self, task_id: int) -> str:
        return await self.client.cancel_task(task_id)

    async def retry(self, task_id: int, *, anywhere: bool = False) -> None:
        await self.client.retry_task(task_id, anywhere=anywhere)

    async def task_counts(self) -> dict[str, int]:
        return await self.client.task_counts()

    async def spend(self) -> list[dict[str, Any]]:
        return await self.client.spend()

    # ------------------------------------------------------------------ approvals
    #: Who decides at the console, in the audit trail.
    DECIDER = "console"

    async def list_approvals(self, *, state: str | None, limit: int) -> list[dict[str, Any]]:
        return [{**_json(a), "summary": a.summary()}
                for a in await self.client.approvals(state=state, limit=limit)]

    async def show_approval(self, approval_id: int) -> dict[str, Any]:
        detail = await self.client.approval(approval_id)
        return {**_json(detail.approval), "summary": detail.approval.summary(),
                "history": [_json(h) for h in detail.history]}

    async def approve(self, approval_id: int) -> dict[str, Any]:
        return _json(await self.client.approve(approval_id, by=self.DECIDER))

    async def deny(self, approval_id: int, reason: str) -> dict[str, Any]:
        return _json(await self.client.deny(approval_id, reason, by=self.DECIDER))

    async def message_count(self) -> int:
        return await self.client.latest_message_id()
