"""RoleAgent's own health: what its components push reaches the heartbeat at once, and
reading the agent's stats changes nothing."""

from __future__ import annotations

from echo import db
from echo.config import Settings
from echo.org.agent.tree import RoleAgent
from echo.org.roles import load_roles


async def test_a_deferred_workflow_step_degrades_the_agent_until_a_step_succeeds(
    settings: Settings, db: db.Database
) -> None:
    role = load_roles(settings.agents_dir)["cto"]
    agent = RoleAgent(settings, role)
    await agent.open()
    try:
        assert agent.health is not None and agent.database is not None
        workflow = agent._new_workflow()  # as the tree builds it: reporting to the monitor
        assert agent.health.own().state == "healthy"
        # What WorkflowAgent.run reports when a step meets an unavailable database.
        workflow.condition.trouble("Postgres is unavailable (connection refused)")
        beat = agent.health.own()
        assert beat.state == "degraded" and beat.reason == (
            "workflow: Postgres is unavailable (connection refused)")
        assert beat.details["workflow_error"] == workflow.last_error
        workflow.condition.ok()  # the next step succeeded
        assert agent.health.own().state == "healthy"
    finally:
        await agent.close()


async def test_reading_the_stats_changes_no_health(settings: Settings, db: db.Database) -> None:
    """The heartbeat reads `stats()` every beat; a read must neither degrade the agent nor
    clear a problem a component reported (it used to do both, from stale fields)."""
    role = load_roles(settings.agents_dir)["cto"]
    agent = RoleAgent(settings, role)
    await agent.open()
    try:
        assert agent.health is not None
        subscriber = agent._new_subscriber()
        workflow = agent._new_workflow()
        agent.health.problem("work", "cannot claim tasks: database is unavailable")
        before = (agent.health.state, agent.health.reason)
        for _ in range(3):
            agent.stats()
            agent.health.own()
        assert (agent.health.state, agent.health.reason) == before == (
            "degraded", "work: cannot claim tasks: database is unavailable")
        subscriber.condition.trouble("messages unavailable")
        workflow.condition.trouble("a step failed")
        assert agent.health.reason == ("messages: messages unavailable; work: cannot claim "
                                       "tasks: database is unavailable; workflow: a step failed")
        agent.stats()
        subscriber.condition.ok()
        workflow.condition.ok()
        agent.health.resolved("work")
        agent.stats()
        assert agent.health.state == "healthy"
    finally:
        await agent.close()
