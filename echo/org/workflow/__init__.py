"""The collaborative workflow: self-selection, discussion, consensus, CEO synthesis.

    ports.py        WorkflowPort, TaskPort, Publish: what the parts ask of the stores
    store.py        WorkflowStore: every workflow query, typed models, the Phase enum
    memory.py       MemoryWorkflowStore, MemoryTasks: the in-memory adapters (unit tests;
                    imported from echo.org.workflow.memory, not part of the package's face)
    participant.py  RolePart: one role's own part (select, discuss, vote, report work)
    driver.py       Driver: the CEO's part (phase transitions, the decision, the work)
    agent.py        WorkflowAgent: the loop over open workflows; failures stay in one
    training.py     Scenario: a training scenario and its checks (`echoctl train`)

Import from here: `from echo.org.workflow import WorkflowStore, Phase, WorkflowAgent`.
"""

from echo.org.workflow.agent import SkipWhenUnavailable, WorkflowAgent
from echo.org.workflow.driver import DRIVER, QUORUMS, Driver, consensus
from echo.org.workflow.participant import RolePart, post_uuid
from echo.org.workflow.ports import Publish, TaskPort, WorkflowPort
from echo.org.workflow.store import (
    LIVE_WITHIN,
    Action,
    Decision,
    Delivery,
    Participant,
    Phase,
    TaskOutcome,
    Workflow,
    WorkflowDetail,
    WorkflowStore,
)
from echo.work.queue import SKIPPED  # the error prefix of a task skipped for want of Claude

__all__ = [
    "DRIVER",
    "LIVE_WITHIN",
    "QUORUMS",
    "SKIPPED",
    "Action",
    "Decision",
    "Delivery",
    "Driver",
    "Participant",
    "Phase",
    "Publish",
    "RolePart",
    "SkipWhenUnavailable",
    "TaskOutcome",
    "TaskPort",
    "Workflow",
    "WorkflowAgent",
    "WorkflowDetail",
    "WorkflowPort",
    "WorkflowStore",
    "consensus",
    "post_uuid",
]
