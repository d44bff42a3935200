"""An in-memory `WorkflowStore` (and task queue and bus) for the state machine's unit
tests: the same methods the participant and the driver call, held in dicts, so a
whole workflow runs without Postgres. Like the real store, a second record of the
same participant, post or decision changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from echo.bus import Message, StoredMessage
from echo.errors import UsageError
from echo.org.workflow import Decision, Participant, Phase, TaskOutcome, Workflow, WorkflowStore
from echo.work import NewTask, TaskQueue
from echo.work.queue import Enqueued


class FakeStore(WorkflowStore):
    """Workflows, participants, decisions, messages and tasks in memory."""

    def __init__(self) -> None:  # no database
        self.workflows: dict[str, Workflow] = {}
        self.people: dict[tuple[str, str], Participant] = {}
        self.made: dict[str, Decision] = {}
        self.messages: list[StoredMessage] = []
        self.task_rows: dict[int, dict[str, Any]] = {}
        self.live: set[str] = set()
        self.fail_on: dict[str, Exception] = {}  # method name -> error to raise once

    def _maybe_fail(self, name: str) -> None:
        if name in self.fail_on:
            raise self.fail_on.pop(name)

    # --- workflows
    def add(self, *, roles: list[str], rounds: int = 1, quorum: str = "majority",
            repo: dict[str, Any] | None = None) -> Workflow:
        now = datetime.now(UTC)
        wf = Workflow(id=f"wf-{len(self.workflows) + 1}", subject="Move the API to the new cluster",
                      body="budget approved", started_by="operator", phase=Phase.SELECTING,
                      roles=roles, rounds=rounds, quorum=quorum, decider_timeout=1.0,
                      phase_timeout=60.0, phase_deadline=now + timedelta(seconds=60),
                      created_at=now, updated_at=now, repo=repo)
        self.workflows[wf.id] = wf
        return wf

    def overdue(self, wf_id: str) -> None:
        self.workflows[wf_id] = self.workflows[wf_id].model_copy(update={"overdue": True})

    async def get(self, workflow_id: str) -> Workflow | None:
        return self.workflows.get(workflow_id)

    async def open(self) -> list[Workflow]:
        self._maybe_fail("open")
        return [w for w in self.workflows.values() if not w.phase.final]

    async def advance(self, wf: Workflow, phase: Phase, round_no: int, consensus: str | None,
                      *, actor: str) -> bool:
        now = self.workflows[wf.id]
        if (now.phase, now.round) != (wf.phase, wf.round):
            return False
        self.workflows[wf.id] = now.model_copy(update={
            "phase": phase, "round": round_no, "consensus": consensus or now.consensus,
            "overdue": False})
        return True

    async def mark_error(self, wf: Workflow, reason: str, *, actor: str) -> bool:
        if self.workflows[wf.id].phase != wf.phase:
            return False
        self.workflows[wf.id] = self.workflows[wf.id].model_copy(
            update={"phase": Phase.ERROR, "error": reason})
        return True

    # --- participants and posts
    async def record_participant(self, workflow_id: str, role: str, *, participate: bool,
                                 confidence: float, reason: str, decider: str,
                                 fallback_reason: str | None) -> None:
        self._maybe_fail("record_participant")
        self.people.setdefault((workflow_id, role), Participant(
            workflow_id=workflow_id, role=role, participate=participate, confidence=confidence,
            reason=reason, decider=decider, fallback_reason=fallback_reason,
            decided_at=datetime.now(UTC)))

    async def participants(self, workflow_id: str) -> list[Participant]:
        return [p for (w, _), p in self.people.items() if w == workflow_id]

    async def thread(self, workflow_id: str) -> list[StoredMessage]:
        return [m for m in self.messages if m.thread_id == workflow_id]

    async def posted(self, key: uuid.UUID) -> bool:
        return any(m.uuid == key for m in self.messages)

    async def publish(self, message: Message) -> None:
        """The bus: a post with a uuid already stored inserts nothing (ON CONFLICT)."""
        if not await self.posted(message.uuid):
            self.messages.append(StoredMessage(**message.model_dump(), id=len(self.messages) + 1,
                                               created_at=datetime.now(UTC)))

    # --- decisions and tasks
    async def decision_of(self, workflow_id: str) -> Decision | None:
        return self.made.get(workflow_id)

    async def decide(self, workflow_id: str, *, actor: str, outcome: str, consensus: str,
                     summary: str, source: str, fallback_reason: str | None,
                     tasks: list[dict[str, Any]]) -> Decision:
        if workflow_id not in self.made:
            self.made[workflow_id] = Decision(
                id=len(self.made) + 1, workflow_id=workflow_id, decided_by=actor, outcome=outcome,
                consensus=consensus, summary=summary, tasks=tasks, source=source,
                fallback_reason=fallback_reason, created_at=datetime.now(UTC))
        return self.made[workflow_id]

    async def set_decision_tasks(self, decision_id: int, tasks: list[dict[str, Any]], *,
                                 actor: str) -> None:
        for wf_id, d in self.made.items():
            if d.id == decision_id:
                self.made[wf_id] = d.model_copy(update={"tasks": tasks})

    async def tasks_by_key(self, keys: Sequence[str]) -> dict[str, int]:
        return {r["dedupe_key"]: i for i, r in self.task_rows.items() if r["dedupe_key"] in keys}

    async def tasks(self, ids: Sequence[int]) -> list[TaskOutcome]:
        return [TaskOutcome.from_row(self.task_rows[i]) for i in sorted(ids)]

    async def decision_tasks(self, workflow_id: str) -> list[TaskOutcome]:
        d = self.made.get(workflow_id)
        return await self.tasks([t["task_id"] for t in d.tasks if t.get("task_id")] if d else [])

    async def up_roles(self, *, fresh: float = 10.0) -> set[str]:
        return set(self.live)

    def finish_task(self, task_id: int, status: str, error: str | None = None) -> None:
        self.task_rows[task_id].update(status=status, error=error)


class FakeQueue(TaskQueue):
    """The work queue, on the fake store's task rows."""

    def __init__(self, store: FakeStore) -> None:  # no database
        self.store = store
        self.enqueued = 0

    async def enqueue_many(self, tasks: Sequence[NewTask]) -> list[Enqueued]:
        made = []
        for t in tasks:
            task_id = len(self.store.task_rows) + 1
            self.store.task_rows[task_id] = {
                "task_id": task_id, "assigned_role": t.role, "task_description": t.description,
                "status": "pending", "error": None, "result": None, "dedupe_key": t.dedupe_key,
                "payload": dict(t.payload)}
            self.enqueued += 1
            made.append(Enqueued(task_id, True))
        return made

    async def cancel(self, task_id: int, *, actor: str = "cli") -> str:
        row = self.store.task_rows[task_id]
        if row["status"] not in ("pending", "running"):
            raise UsageError(f"task {task_id} is already {row['status']}")
        previous, row["status"] = row["status"], "cancelled"
        return str(previous)
