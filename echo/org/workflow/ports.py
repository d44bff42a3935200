"""The ports of the workflow: what its parts ask of the database and of the bus.

The participant (participant.py), the driver (driver.py) and the agent's loop
(agent.py) are a state machine over a few stores. They are written against these
protocols, not against the Postgres classes, so the whole machine runs in unit
tests without a server: the Postgres `WorkflowStore` (store.py) and `TaskQueue`
(echo.work) are one adapter, the in-memory one (memory.py) is the other. The
protocols are structural: neither adapter inherits from them, and mypy checks
each adapter wherever it is passed as a port (agent.py for Postgres, memory.py for
memory). So a method added here that an adapter lacks fails mypy instead of
falling through to the real SQL at test time, which the old test fake (a subclass
of the Postgres store) let happen.

Each protocol holds what the workflow calls and nothing more: the client's and the
console's reads (`recent`, `detail`, `decisions`, ...) stay on the Postgres store.

    WorkflowPort  the workflow store: phases, participants, posts, the decision
    TaskPort      the slice of the task queue the driver uses (enqueue, cancel)
    Publish       the slice of the bus: one function that commits a message
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from echo.bus import Message, StoredMessage
from echo.org.workflow.store import Decision, Participant, Phase, TaskOutcome, Workflow
from echo.work import NewTask
from echo.work.tasks import Enqueued

#: How a part posts to the bus (the agent's `Publisher.publish`): the message is
#: committed when it returns, and a post whose uuid is stored already adds nothing.
Publish = Callable[[Message], Awaitable[object]]


class WorkflowPort(Protocol):
    """The workflow store as the participant, the driver and the agent's loop use it.

    Every write is idempotent (a second record of the same participant, decision or
    transition changes nothing), which is what lets a restarted agent redo its step."""

    # ------------------------------------------------ the agent's loop
    async def open(self) -> list[Workflow]:
        """The unfinished workflows, oldest first, each with `overdue` set."""
        ...

    async def get(self, workflow_id: str) -> Workflow | None: ...

    async def mark_error(self, wf: Workflow, reason: str, *, actor: str) -> bool:
        """Stop `wf` for good, only from the phase it was read in."""
        ...

    async def conversation(self, workflow_id: str, role: str) -> str | None: ...

    # ------------------------------------------------ phases (the driver)
    async def advance(self, wf: Workflow, phase: Phase, round_no: int, consensus: str | None,
                      *, actor: str) -> bool:
        """Move `wf` on, only from the (phase, round) it was read in."""
        ...

    async def up_roles(self, *, fresh: float = ...) -> set[str]:
        """The roles whose agent is up now."""
        ...

    # ------------------------------------------------ participants and posts
    async def record_participant(self, workflow_id: str, role: str, *, participate: bool,
                                 confidence: float, reason: str, decider: str,
                                 fallback_reason: str | None) -> None:
        """A role's self-selection, once."""
        ...

    async def participants(self, workflow_id: str) -> list[Participant]: ...

    async def thread(self, workflow_id: str) -> list[StoredMessage]:
        """The workflow's messages, in the order they were committed."""
        ...

    async def posted(self, key: uuid.UUID) -> bool:
        """Whether the post with this uuid is stored."""
        ...

    # ------------------------------------------------ the decision and its tasks
    async def decision_of(self, workflow_id: str) -> Decision | None: ...

    async def decide(self, workflow_id: str, *, actor: str, outcome: str, consensus: str,
                     summary: str, source: str, fallback_reason: str | None,
                     tasks: list[dict[str, Any]]) -> Decision:
        """Write the decision once; return the stored one."""
        ...

    async def set_decision_tasks(self, decision_id: int, tasks: list[dict[str, Any]], *,
                                 actor: str) -> None: ...

    async def tasks_by_key(self, keys: Sequence[str]) -> dict[str, int]:
        """The task id holding each dedupe key, in any status."""
        ...

    async def tasks(self, ids: Sequence[int]) -> list[TaskOutcome]: ...

    async def decision_tasks(self, workflow_id: str) -> list[TaskOutcome]: ...


class TaskPort(Protocol):
    """The task queue as the driver uses it: the decision's tasks go in, and the
    pending task of a role that never came back is cancelled."""

    async def enqueue_many(self, tasks: Sequence[NewTask]) -> list[Enqueued]:
        """Add `tasks`; one whose dedupe key a live task holds names that task instead."""
        ...

    async def cancel(self, task_id: int, *, actor: str) -> str:
        """Cancel a task not yet final; the status it had, or `UsageError`."""
        ...
