"""The workflow store: every query about workflows, with typed results.

The state machine lives in Postgres (`workflows`, shared/sql/006_workflow.sql and
011_workflow_store.sql); this module is the only one that talks to those tables.
It returns pydantic models (`Workflow`, `Participant`, `Decision`, `TaskOutcome`,
`Action`, `WorkflowDetail`) and a `Phase` enum, so the participant, the driver, the
client and the console read one shape. This class is the Postgres adapter of the
workflow's `WorkflowPort` (ports.py); the state machine's unit tests run on the
in-memory adapter (memory.py) instead, without a server.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from echo import db
from echo.bus import StoredMessage
from echo.errors import NotFound
from echo.work.queue import FINAL_STATUSES, task_outcome

Q = db.load_queries("workflow")
#: An agent is up when its heartbeat is this recent (seconds).
LIVE_WITHIN = 10.0


class Phase(StrEnum):
    """Where a workflow is. `done`, `cancelled` and `error` are final."""

    SELECTING = "selecting"
    DISCUSSING = "discussing"
    VOTING = "voting"
    DECIDING = "deciding"
    EXECUTING = "executing"
    DONE = "done"
    CANCELLED = "cancelled"
    ERROR = "error"

    @property
    def final(self) -> bool:
        return self in (Phase.DONE, Phase.CANCELLED, Phase.ERROR)


class Workflow(BaseModel):
    """One row of `workflows`; `overdue` is whether its phase deadline has passed."""

    model_config = ConfigDict(extra="ignore")

    id: str
    subject: str
    body: str = ""
    started_by: str
    phase: Phase
    round: int = 0
    roles: list[str]
    rounds: int = 2
    quorum: str = "majority"
    decider_timeout: float = 30.0
    phase_timeout: float = 120.0
    phase_deadline: datetime
    consensus: str | None = None
    message_id: int | None = None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    error: str | None = None
    overdue: bool = False
    #: The repository the decision's tasks work in (`workflow start --repo`), as a
    #: task's payload names it; None: tasks run without one.
    repo: dict[str, Any] | None = None


class Participant(BaseModel):
    """A role's self-selection: whether it takes part, why, and which decider said so."""

    model_config = ConfigDict(extra="ignore")

    workflow_id: str
    role: str
    participate: bool
    confidence: float
    reason: str
    decider: str
    fallback_reason: str | None = None
    decided_at: datetime


class Decision(BaseModel):
    """The CEO's decision on a workflow, with the tasks it assigned."""

    model_config = ConfigDict(extra="ignore")

    id: int
    workflow_id: str
    decided_by: str
    outcome: str
    consensus: str
    summary: str
    tasks: list[dict[str, Any]] = Field(default_factory=list)
    source: str
    fallback_reason: str | None = None
    created_at: datetime
    subject: str | None = None  # filled by `decisions()`, which joins the workflow


class TaskOutcome(BaseModel):
    """A decision's task as the workflow reports it: a failure because Claude was
    unavailable is `skipped` with its reason, never `completed`."""

    task_id: int
    role: str | None
    description: str
    status: str
    error: str | None = None
    result: Any = None
    note: str | None = None
    waiting: str | None = None  # why the governor holds it back (a pending Claude task)

    @property
    def final(self) -> bool:
        return self.status == "skipped" or self.status in FINAL_STATUSES

    def report(self) -> dict[str, Any]:
        """The body a participant posts about it (JSON-able, no empty keys)."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_row(cls, row: Any) -> TaskOutcome:
        error = row["error"] or ""
        status = task_outcome(row["status"], error)
        result = row["result"]
        if isinstance(result, dict) and "result" in result:
            result = str(result["result"])[:2000]
        return cls(task_id=row["task_id"], role=row["assigned_role"],
                   description=row["task_description"], status=status,
                   error=error[:1000] or None, result=result)


class Action(BaseModel):
    """One audit row of a workflow (agent_actions), written by the triggers."""

    at: datetime
    actor: str
    action: str
    details: dict[str, Any] = Field(default_factory=dict)


class WorkflowDetail(BaseModel):
    """Everything about one workflow: what `workflow show` and the console render."""

    workflow: Workflow
    participants: list[Participant]
    messages: list[StoredMessage]
    decision: Decision | None
    tasks: list[TaskOutcome]
    timeline: list[Action]


class Delivery(BaseModel):
    """The start broadcast of a workflow: stored, announced, and who processed it."""

    message_id: int | None
    announced: bool
    reached: list[str]


class WorkflowStore:
    """Every workflow query, on one `Database`. Writes set the audit actor."""

    def __init__(self, database: db.Database) -> None:
        self.db = database

    # ------------------------------------------------------------ workflows

    async def create(self, *, subject: str, body: str, started_by: str, roles: Sequence[str],
                     rounds: int, quorum: str, decider_timeout: float, phase_timeout: float,
                     repo: dict[str, Any] | None = None) -> str:
        """A new workflow in `selecting`; returns its id (`wf-N`). `repo` is the
        repository its decision's tasks work in (a task payload's `repo`)."""
        async with self.db.transaction() as conn:
            await conn.execute(Q["set_actor"], started_by)
            return str(await conn.fetchval(Q["create"], subject, body, started_by, list(roles),
                                           rounds, quorum, decider_timeout, phase_timeout, repo))

    async def set_message(self, workflow_id: str, message_id: int) -> None:
        async with self.db.acquire() as conn:
            await conn.execute(Q["set_message"], workflow_id, message_id)

    async def get(self, workflow_id: str) -> Workflow | None:
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(Q["get"], workflow_id)
        return None if row is None else Workflow.model_validate(dict(row))

    async def open(self) -> list[Workflow]:
        """The unfinished workflows, oldest first: what every agent works on."""
        async with self.db.acquire() as conn:
            return [Workflow.model_validate(dict(r)) for r in await conn.fetch(Q["open"])]

    async def recent(self, limit: int = 20) -> list[Workflow]:
        """Workflows, newest first."""
        async with self.db.acquire() as conn:
            return [Workflow.model_validate(dict(r)) for r in await conn.fetch(Q["list"], limit)]

    async def advance(self, wf: Workflow, phase: Phase, round_no: int, consensus: str | None,
                      *, actor: str) -> bool:
        """Move `wf` on, only from the (phase, round) it was read in: a retried or
        concurrent transition changes nothing the second time."""
        async with self.db.transaction() as conn:
            await conn.execute(Q["set_actor"], actor)
            moved = await conn.fetchval(Q["advance"], wf.id, str(wf.phase), wf.round, str(phase),
                                        round_no, consensus)
        return bool(moved)

    async def cancel(self, workflow_id: str, *, actor: str) -> Phase | None:
        """Cancel an unfinished workflow; the phase it had, or None if it had finished
        (or does not exist)."""
        async with self.db.transaction() as conn:
            await conn.execute(Q["set_actor"], actor)
            before = await conn.fetchval(Q["cancel"], workflow_id)
        return None if before is None else Phase(before)

    async def mark_error(self, wf: Workflow, reason: str, *, actor: str) -> bool:
        """Stop one workflow for good with `reason` (a permanent error in one of its
        steps), only from the phase it was read in."""
        async with self.db.transaction() as conn:
            await conn.execute(Q["set_actor"], actor)
            return bool(await conn.fetchval(Q["mark_error"], wf.id, str(wf.phase), reason[:4000]))

    # ------------------------------------------------------------ participants and posts

    async def record_participant(self, workflow_id: str, role: str, *, participate: bool,
                                 confidence: float, reason: str, decider: str,
                                 fallback_reason: str | None) -> None:
        """A role's self-selection, once (a second one changes nothing)."""
        async with self.db.transaction() as conn:
            await conn.execute(Q["set_actor"], role)
            await conn.execute(Q["record_participant"], workflow_id, role, participate,
                               confidence, reason, decider, fallback_reason)

    async def conversation(self, workflow_id: str, role: str) -> str | None:
        """The Claude session of `role`'s questions of this workflow, if one was recorded."""
        async with self.db.acquire() as conn:
            found: str | None = await conn.fetchval(Q["conversation"], workflow_id, role)
        return found

    async def record_conversation(self, workflow_id: str, role: str, session_id: str) -> None:
        """Remember `role`'s session of this workflow (its later questions resume it)."""
        async with self.db.acquire() as conn:
            await conn.execute(Q["record_conversation"], workflow_id, role, session_id)

    async def participants(self, workflow_id: str) -> list[Participant]:
        async with self.db.acquire() as conn:
            rows = await conn.fetch(Q["participants"], workflow_id)
        return [Participant.model_validate(dict(r)) for r in rows]

    async def thread(self, workflow_id: str) -> list[StoredMessage]:
        """The workflow's messages (start, positions, votes, decision, reports), in order."""
        async with self.db.acquire() as conn:
            return [StoredMessage.from_row(r) for r in await conn.fetch(Q["thread"], workflow_id)]

    async def posted(self, key: uuid.UUID) -> bool:
        """Whether the post with this uuid is stored (each step posts once)."""
        async with self.db.acquire() as conn:
            return bool(await conn.fetchval(Q["message_exists"], key))

    # ------------------------------------------------------------ decisions and tasks

    async def decision_of(self, workflow_id: str) -> Decision | None:
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(Q["decision_of"], workflow_id)
        return None if row is None else Decision.model_validate(dict(row))

    async def decide(self, workflow_id: str, *, actor: str, outcome: str, consensus: str,
                     summary: str, source: str, fallback_reason: str | None,
                     tasks: list[dict[str, Any]]) -> Decision:
        """Write the decision once (with its tasks, if it has none yet); return the stored one."""
        async with self.db.transaction() as conn:
            await conn.execute(Q["set_actor"], actor)
            await conn.execute(Q["insert_decision"], workflow_id, actor, outcome, consensus,
                               summary, source, fallback_reason)
            row = await conn.fetchrow(Q["decision_of"], workflow_id)
            assert row is not None  # inserted just now, or already there
            if tasks and not row["tasks"]:
                await conn.execute(Q["set_decision_tasks"], row["id"], tasks)
                row = await conn.fetchrow(Q["decision_of"], workflow_id)
        assert row is not None
        return Decision.model_validate(dict(row))

    async def set_decision_tasks(self, decision_id: int, tasks: list[dict[str, Any]], *,
                                 actor: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(Q["set_actor"], actor)
            await conn.execute(Q["set_decision_tasks"], decision_id, tasks)

    async def decisions(self, limit: int = 20) -> list[Decision]:
        """Every decision, newest first, with its workflow's subject."""
        async with self.db.acquire() as conn:
            rows = await conn.fetch(Q["decisions"], limit)
        return [Decision.model_validate(dict(r)) for r in rows]

    async def tasks_by_key(self, keys: Sequence[str]) -> dict[str, int]:
        """The task id holding each dedupe key, in any status."""
        async with self.db.acquire() as conn:
            rows = await conn.fetch(Q["tasks_by_key"], list(keys))
        return {r["dedupe_key"]: r["task_id"] for r in rows}

    async def tasks(self, ids: Sequence[int]) -> list[TaskOutcome]:
        if not ids:
            return []
        async with self.db.acquire() as conn:
            rows = await conn.fetch(Q["tasks"], list(ids))
        return [TaskOutcome.from_row(r) for r in rows]

    async def decision_tasks(self, workflow_id: str) -> list[TaskOutcome]:
        decision = await self.decision_of(workflow_id)
        ids = [t["task_id"] for t in decision.tasks if t.get("task_id")] if decision else []
        return await self.tasks(ids)

    # ------------------------------------------------------------ reading for people

    async def actions(self, workflow_id: str) -> list[Action]:
        async with self.db.acquire() as conn:
            rows = await conn.fetch(Q["actions"], workflow_id)
        return [Action.model_validate(dict(r)) for r in rows]

    async def up_roles(self, *, fresh: float = LIVE_WITHIN) -> set[str]:
        """The roles whose agent is up now: a heartbeat within `fresh` seconds."""
        async with self.db.acquire() as conn:
            return {r["role"] for r in await conn.fetch(Q["live_roles"], fresh)}

    async def detail(self, workflow_id: str) -> WorkflowDetail:
        """Everything about one workflow, or `NotFound`."""
        wf = await self.get(workflow_id)
        if wf is None:
            raise NotFound(f"no workflow {workflow_id!r}; `echoctl workflow list` lists them")
        decision = await self.decision_of(workflow_id)
        ids = [t["task_id"] for t in decision.tasks if t.get("task_id")] if decision else []
        return WorkflowDetail(
            workflow=wf, participants=await self.participants(workflow_id),
            messages=await self.thread(workflow_id), decision=decision,
            tasks=await self.tasks(ids), timeline=await self.actions(workflow_id))

    async def delivery(self, workflow_id: str) -> Delivery:
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(Q["proposal"], workflow_id)
        if row is None:
            return Delivery(message_id=None, announced=False, reached=[])
        return Delivery(message_id=row["id"], announced=row["published_at"] is not None,
                        reached=list(row["reached"]))
