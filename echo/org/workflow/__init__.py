"""The collaborative workflow: self-selection, discussion, consensus, CEO synthesis.

    store.py        WorkflowStore: every workflow query, typed models, the Phase enum
    agent.py        WorkflowAgent: each role's part, and the CEO's driving

Import from here: `from echo.org.workflow import WorkflowStore, Phase, WorkflowAgent`.
"""

from echo.org.workflow.agent import (
    DRIVER,
    QUORUMS,
    SkipWhenUnavailable,
    WorkflowAgent,
    consensus,
    post_uuid,
)
from echo.org.workflow.store import (
    LIVE_WITHIN,
    SKIPPED,
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

__all__ = [
    "DRIVER",
    "LIVE_WITHIN",
    "QUORUMS",
    "SKIPPED",
    "Action",
    "Decision",
    "Delivery",
    "Participant",
    "Phase",
    "SkipWhenUnavailable",
    "TaskOutcome",
    "Workflow",
    "WorkflowAgent",
    "WorkflowDetail",
    "WorkflowStore",
    "consensus",
    "post_uuid",
]
