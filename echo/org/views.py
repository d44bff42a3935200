"""What the client answers with: the typed results of `echo.org.client.Client`.

They live apart from the client so that the CLI, the console and the MCP server can
name a result (to print it, to serialise it) without importing the client's wiring,
and so that the client is the operations alone.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, computed_field

from echo.bus import StoredMessage
from echo.work import task_outcome
from echo.work.approvals import Approval


class SendKind(StrEnum):
    """The kinds a person may send; the others (vote, decision, health, system) are
    what the agents write themselves."""

    BROADCAST = "broadcast"
    DIRECT = "direct"
    PROPOSAL = "proposal"
    DISCUSSION = "discussion"
    TASK = "task"
    STATUS = "status"


class Sent(BaseModel):
    """A message stored (`db_id`) and how its announcement went. `receivers` is how
    many subscribers Redis reached; None over NOTIFY, which cannot count them."""

    db_id: int
    channel: str
    receivers: int | None
    published: bool
    transport: str


class Submitted(BaseModel):
    """A task in the queue; `created` is False when its dedupe key was already held."""

    task_id: int
    created: bool


class TaskSummary(BaseModel):
    """One task as `tasks list` shows it. `attempt` counts the runs that started."""

    task_id: int
    task_type: str
    task_description: str
    task_priority: int
    status: str
    assigned_role: str | None = None
    assigned_worker_id: str | None = None
    retry_count: int
    max_retries: int
    error: str | None = None
    cost_usd: float | None = None
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_sec: float | None = None
    attempt: int = 0
    workflow: str | None = None
    workspace_at: str | None = None  # where its worktree is, when only there may it go on
    waiting: str | None = None  # why the governor holds it back (`budget — ...`)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def outcome(self) -> str:
        """The status a person reads (one of `echo.work.OUTCOMES`): a task that failed
        because Claude was unavailable is `skipped`, as `workflow show` says. The CLI,
        the dashboard, the status filter, the summary and the metrics use these words."""
        return task_outcome(self.status, self.error)


class TaskEvent(BaseModel):
    at: datetime
    actor: str
    action: str
    details: Any = None


class RunEventRow(BaseModel):
    """One event of a Claude run of the task (echo.work.runs): what it did, at which
    attempt, turn and running cost."""

    attempt: int
    seq: int
    at: datetime
    kind: str
    turn: int | None = None
    cost_usd: float | None = None
    summary: str
    session_id: str | None = None


class DoingNow(BaseModel):
    """What one running Claude task is doing: "cto: Edit src/api.py, turn 3, $0.12"."""

    task_id: int
    role: str | None = None
    attempt: int
    kind: str
    turn: int | None = None
    cost_usd: float | None = None
    summary: str
    at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def line(self) -> str:
        parts = [self.summary]
        if self.turn:
            parts.append(f"turn {self.turn}")
        if self.cost_usd is not None:
            parts.append(f"${self.cost_usd:.2f}")
        return f"{self.role or f'task {self.task_id}'}: {', '.join(parts)}"


class TaskRun(BaseModel):
    """One Claude run of the task as the ledger has it: the attempt and how it ended."""

    model_config = ConfigDict(extra="ignore")

    attempt: int | None = None
    at: datetime
    outcome: str
    cost_usd: float = 0.0
    turns: int | None = None
    duration_ms: int | None = None
    model: str | None = None
    session_id: str | None = None
    resumed_attempt: int | None = None


class TaskDetail(BaseModel):
    """Every column of one task, its audit trail, its Claude runs' events (oldest
    first) and the ledger's row of each run (`runs`, one per attempt that ended)."""

    task: dict[str, Any]
    history: list[TaskEvent]
    events: list[RunEventRow] = []
    runs: list[TaskRun] = []
    approvals: list[Approval] = []  # its approval requests, oldest first


class ApprovalDetail(BaseModel):
    """One approval request and its audit trail (who asked, who decided, when)."""

    approval: Approval
    history: list[TaskEvent]


class Inbox(BaseModel):
    """One role's cursor and what it has not read yet."""

    role: str
    title: str
    state: str
    cursor: int
    unread: list[StoredMessage]
