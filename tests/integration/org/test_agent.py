"""RoleAgent's own health: what its components report reaches the heartbeat at once."""

from __future__ import annotations

from echo import db
from echo.config import Settings
from echo.org.agent import RoleAgent
from echo.org.roles import load_roles
from echo.org.workflow import WorkflowAgent


async def test_a_deferred_workflow_step_degrades_the_agent_until_a_step_succeeds(
    settings: Settings, db: db.Database
) -> None:
    role = load_roles(settings.agents_dir)["cto"]
    agent = RoleAgent(settings, role)
    await agent.open()
    try:
        assert agent.health is not None and agent.database is not None
        agent.workflow = WorkflowAgent(settings, agent.database, role)
        assert agent.health.own().state == "healthy"
        # What WorkflowAgent.run records when a step meets an unavailable database.
        agent.workflow.last_error = "Postgres is unavailable (connection refused)"
        beat = agent.health.own()
        assert beat.state == "degraded" and beat.reason == (
            "workflow: Postgres is unavailable (connection refused)")
        assert beat.details["workflow_error"] == agent.workflow.last_error
        agent.workflow.last_error = None  # the next step succeeded
        assert agent.health.own().state == "healthy"
    finally:
        await agent.close()
