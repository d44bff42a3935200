"""The in-memory adapters of the workflow's ports (ports.py), for unit tests.

The driver's and the participant's state machine runs on these without Postgres, in
milliseconds, and with the failures a test needs on demand. They keep the guarantees
the SQL gives, since the state machine relies on them:

- a transition happens only from the (phase, round) it was read in (`advance`);
- a second record of the same participant, post (uuid) or decision changes nothing;
- a phase is `overdue` once its deadline has passed, on the injected clock `now`
  (tests own time: they move the clock instead of sleeping);
- a task whose dedupe key a live task holds is not enqueued again.

`fail_on` plants faults: method name -> the exception its next call raises (once),
e.g. `StoreUnavailable` for an outage or `StoreRejected` for a refused statement.
It covers the store, the bus (`publish`) and the queue (`enqueue_many`, `cancel`).

The store and the queue share one set of task rows, as `workflow_participants`,
`decisions` and `agent_tasks` share one database: `MemoryTasks` writes what the
`MemoryWorkflowStore` reads, and `MemoryWorkflowStore.publish` is the bus (the
messages its `thread` reads). None of this imports the database driver.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from echo.bus import Message, StoredMessage
from echo.errors import NotFound, UsageError
from echo.org.workflow.store import LIVE_WITHIN, Decision, Participant, Phase, TaskOutcome, Workflow
from echo.work import Enqueued, NewTask
from echo.work.queue import FINAL_STATUSES

if TYPE_CHECKING:
    from echo.org.workflow.ports import Publish, TaskPort, WorkflowPort

#: What stamps times: returns an aware datetime (a test passes its own clock).
Clock = Callable[[], datetime]
#: The statuses a task can be cancelled from (the queue's `cancel` query).
CANCELLABLE = ("pending", "running", "awaiting_approval")


def wall_clock() -> datetime:
    """The default clock: now, in UTC."""
    return datetime.now(UTC)


@dataclass
class MemoryTask:
    """One row of `agent_tasks`, as the workflow reads it."""

    task_id: int
    task: NewTask
    status: str = "pending"
    error: str | None = None
    result: Any = None

    def outcome(self) -> TaskOutcome:
        """Read the way the Postgres store reads its row (`skipped`, truncation)."""
        return TaskOutcome.from_row({
            "task_id": self.task_id, "assigned_role": self.task.role,
            "task_description": self.task.description, "status": self.status,
            "error": self.error, "result": self.result})


class MemoryWorkflowStore:
    """Workflows, participants, posts, decisions and task rows, in dicts."""

    def __init__(self, *, now: Clock = wall_clock) -> None:
        self.now = now
        self.workflows: dict[str, Workflow] = {}  # as stored: `overdue` is set on reading
        self.participant_rows: dict[tuple[str, str], Participant] = {}
        self.decision_rows: dict[str, Decision] = {}  # by workflow id
        self.messages: list[StoredMessage] = []
        self.task_rows: dict[int, MemoryTask] = {}
        self.sessions: dict[tuple[str, str], str] = {}
        #: The roles whose agent is up (what the heartbeats say; a test sets it).
        self.up: set[str] = set()
        self.fail_on: dict[str, Exception] = {}

    def check_fault(self, name: str) -> None:
        """Raise (once) the exception planted for method `name`, if any."""
        planted = self.fail_on.pop(name, None)
        if planted is not None:
            raise planted

    def _read(self, wf: Workflow) -> Workflow:
        return wf.model_copy(update={"overdue": wf.phase_deadline <= self.now()})

    # ------------------------------------------------------------ workflows

    async def create(self, *, subject: str, body: str, started_by: str, roles: Sequence[str],
                     rounds: int, quorum: str, decider_timeout: float, phase_timeout: float,
                     repo: dict[str, Any] | None = None) -> str:
        """A new workflow in `selecting`, its deadline `phase_timeout` from now."""
        self.check_fault("create")
        now = self.now()
        wf_id = f"wf-{len(self.workflows) + 1}"
        self.workflows[wf_id] = Workflow(
            id=wf_id, subject=subject, body=body, started_by=started_by, phase=Phase.SELECTING,
            roles=list(roles), rounds=rounds, quorum=quorum, decider_timeout=decider_timeout,
            phase_timeout=phase_timeout, phase_deadline=now + timedelta(seconds=phase_timeout),
            created_at=now, updated_at=now, repo=repo)
        return wf_id

    async def get(self, workflow_id: str) -> Workflow | None:
        self.check_fault("get")
        wf = self.workflows.get(workflow_id)
        return None if wf is None else self._read(wf)

    async def open(self) -> list[Workflow]:
        self.check_fault("open")
        return [self._read(w) for w in self.workflows.values() if not w.phase.final]

    async def advance(self, wf: Workflow, phase: Phase, round_no: int, consensus: str | None,
                      *, actor: str) -> bool:
        self.check_fault("advance")
        stored = self.workflows[wf.id]
        if (stored.phase, stored.round) != (wf.phase, wf.round):
            return False
        now = self.now()
        self.workflows[wf.id] = stored.model_copy(update={
            "phase": phase, "round": round_no, "consensus": consensus or stored.consensus,
            "updated_at": now, "phase_deadline": now + timedelta(seconds=stored.phase_timeout),
            "finished_at": now if phase == Phase.DONE else None})
        return True

    async def mark_error(self, wf: Workflow, reason: str, *, actor: str) -> bool:
        self.check_fault("mark_error")
        stored = self.workflows[wf.id]
        if stored.phase != wf.phase:
            return False
        now = self.now()
        self.workflows[wf.id] = stored.model_copy(update={
            "phase": Phase.ERROR, "error": reason[:4000], "updated_at": now, "finished_at": now})
        return True

    async def conversation(self, workflow_id: str, role: str) -> str | None:
        self.check_fault("conversation")
        return self.sessions.get((workflow_id, role))

    async def record_conversation(self, workflow_id: str, role: str, session_id: str) -> None:
        self.check_fault("record_conversation")
        self.sessions[(workflow_id, role)] = session_id

    async def up_roles(self, *, fresh: float = LIVE_WITHIN) -> set[str]:
        self.check_fault("up_roles")
        return set(self.up)

    # ------------------------------------------------------------ participants and posts

    async def record_participant(self, workflow_id: str, role: str, *, participate: bool,
                                 confidence: float, reason: str, decider: str,
                                 fallback_reason: str | None) -> None:
        self.check_fault("record_participant")
        self.participant_rows.setdefault((workflow_id, role), Participant(
            workflow_id=workflow_id, role=role, participate=participate, confidence=confidence,
            reason=reason, decider=decider, fallback_reason=fallback_reason,
            decided_at=self.now()))

    async def participants(self, workflow_id: str) -> list[Participant]:
        self.check_fault("participants")
        rows = [p for (w, _), p in self.participant_rows.items() if w == workflow_id]
        return sorted(rows, key=lambda p: (p.decided_at, p.role))

    async def thread(self, workflow_id: str) -> list[StoredMessage]:
        self.check_fault("thread")
        return [m for m in self.messages if m.thread_id == workflow_id]

    async def posted(self, key: uuid.UUID) -> bool:
        self.check_fault("posted")
        return any(m.uuid == key for m in self.messages)

    async def publish(self, message: Message) -> StoredMessage:
        """The bus: commit `message`; a post whose uuid is stored already adds nothing."""
        self.check_fault("publish")
        for stored in self.messages:
            if stored.uuid == message.uuid:
                return stored
        stored = StoredMessage.model_validate({
            **message.model_dump(), "id": len(self.messages) + 1, "created_at": self.now()})
        self.messages.append(stored)
        return stored

    # ------------------------------------------------------------ decisions and tasks

    async def decision_of(self, workflow_id: str) -> Decision | None:
        self.check_fault("decision_of")
        return self.decision_rows.get(workflow_id)

    async def decide(self, workflow_id: str, *, actor: str, outcome: str, consensus: str,
                     summary: str, source: str, fallback_reason: str | None,
                     tasks: list[dict[str, Any]]) -> Decision:
        self.check_fault("decide")
        made = self.decision_rows.get(workflow_id)
        if made is None:
            made = Decision(id=len(self.decision_rows) + 1, workflow_id=workflow_id,
                            decided_by=actor, outcome=outcome, consensus=consensus,
                            summary=summary, source=source, fallback_reason=fallback_reason,
                            created_at=self.now())
        if tasks and not made.tasks:
            made = made.model_copy(update={"tasks": tasks})
        self.decision_rows[workflow_id] = made
        return made

    async def set_decision_tasks(self, decision_id: int, tasks: list[dict[str, Any]], *,
                                 actor: str) -> None:
        self.check_fault("set_decision_tasks")
        for wf_id, made in self.decision_rows.items():
            if made.id == decision_id:
                self.decision_rows[wf_id] = made.model_copy(update={"tasks": tasks})

    async def tasks_by_key(self, keys: Sequence[str]) -> dict[str, int]:
        self.check_fault("tasks_by_key")
        return {row.task.dedupe_key: i for i, row in self.task_rows.items()
                if row.task.dedupe_key is not None and row.task.dedupe_key in keys}

    async def tasks(self, ids: Sequence[int]) -> list[TaskOutcome]:
        self.check_fault("tasks")
        return [self.task_rows[i].outcome() for i in sorted(set(ids)) if i in self.task_rows]

    async def decision_tasks(self, workflow_id: str) -> list[TaskOutcome]:
        self.check_fault("decision_tasks")
        made = self.decision_rows.get(workflow_id)
        return await self.tasks([t["task_id"] for t in made.tasks if t.get("task_id")]
                                if made else [])


class MemoryTasks:
    """The task queue, on the store's task rows; `finish` is the worker's side."""

    def __init__(self, store: MemoryWorkflowStore) -> None:
        self.store = store

    async def enqueue_many(self, tasks: Sequence[NewTask]) -> list[Enqueued]:
        self.store.check_fault("enqueue_many")
        for task in tasks:
            task.check()  # the same input checks (UsageError) as the Postgres queue
        rows = self.store.task_rows
        made = []
        for task in tasks:
            held = next((i for i, row in rows.items() if task.dedupe_key is not None
                         and row.task.dedupe_key == task.dedupe_key
                         and row.status not in FINAL_STATUSES), None)
            if held is not None:
                made.append(Enqueued(held, False))
                continue
            task_id = max(rows, default=0) + 1
            rows[task_id] = MemoryTask(task_id, task)
            made.append(Enqueued(task_id, True))
        return made

    async def cancel(self, task_id: int, *, actor: str = "cli") -> str:
        self.store.check_fault("cancel")
        row = self.store.task_rows.get(task_id)
        if row is None:
            raise NotFound(f"no task {task_id}")
        if row.status not in CANCELLABLE:
            raise UsageError(f"task {task_id} is already {row.status}")
        previous, row.status = row.status, "cancelled"
        return previous

    def finish(self, task_id: int, status: str, error: str | None = None,
               result: Any = None) -> None:
        """A worker ended the task with `status` (completed, failed, ...)."""
        row = self.store.task_rows[task_id]
        row.status, row.error, row.result = status, error, result


if TYPE_CHECKING:
    def _implements(store: MemoryWorkflowStore) -> tuple[WorkflowPort, TaskPort, Publish]:
        """mypy's check that the memory adapters are the ports: a method a port gains
        and an adapter lacks fails here, not at test time."""
        return store, MemoryTasks(store), store.publish
