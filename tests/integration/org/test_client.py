"""echo.org.client against real Postgres and Redis: every operation a user performs,
its typed result, and what it refuses (before anything is written)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from echo import db as dbmod
from echo.config import Settings
from echo.errors import InvalidMessage, MigrationError, NotFound, UnknownRole, UsageError
from echo.org.client import Client
from echo.org.client_base import NoAgentsUp
from echo.org.node.control import ControlUnavailable
from echo.org.workflow import Phase


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(settings) as c:
        yield c


async def count(db: dbmod.Database, table: str) -> int:
    async with db.acquire() as conn:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))


async def heartbeat(db: dbmod.Database, *roles: str, state: str = "healthy",
                    reason: str | None = None) -> None:
    """What a running agent's HealthMonitor writes (agents are not started here)."""
    async with db.acquire() as conn:
        for role in roles:
            await conn.execute(
                "INSERT INTO agent_health (role, host, pid, state, reason, started_at, details)"
                " VALUES ($1, 'elsewhere', 4242, $2, $3, now(), '{\"inbox_lag\": 3}')",
                role, state, reason)


async def test_broadcast_and_messages(client: Client, db: dbmod.Database) -> None:
    sent = await client.broadcast("Quarterly plan", "details", sender="ceo")
    assert sent.db_id > 0 and sent.channel == "messages:all" and sent.transport == "redis"
    direct = await client.broadcast("Just you", to="cto")
    assert direct.channel == "messages:cto"
    assert [m.subject for m in await client.messages(role="cto")] == ["Quarterly plan", "Just you"]
    assert [m.subject for m in await client.messages(after=sent.db_id)] == ["Just you"]
    assert [m.id for m in await client.messages(limit=1)] == [direct.db_id]
    assert [m.subject for m in await client.messages(role="chro")] == ["Quarterly plan"]


async def test_broadcast_over_notify_does_not_pretend_to_count(notify_settings: Settings) -> None:
    async with Client(notify_settings) as c:
        sent = await c.broadcast("hello")
    assert sent.transport == "notify" and sent.receivers is None and sent.published


async def test_bad_input_is_refused_before_anything_is_written(
    client: Client, db: dbmod.Database
) -> None:
    with pytest.raises(UnknownRole, match="known roles: ceo"):
        await client.broadcast("hi", to="janitor")
    with pytest.raises(UsageError, match="not one a person sends"):
        await client.broadcast("hi", kind="vote")
    with pytest.raises(InvalidMessage, match="subject is empty"):
        await client.broadcast("   ")
    with pytest.raises(UnknownRole):
        await client.submit_task("x", role="janitor")
    with pytest.raises(UsageError, match="unknown status"):
        await client.tasks(status="lost")
    with pytest.raises(UsageError, match="quorum"):
        await client.start_workflow("x", quorum="most")
    assert await count(db, "messages") == 0
    assert await count(db, "agent_tasks") == 0
    assert await count(db, "workflows") == 0


async def test_tasks_submit_list_show_cancel_retry(client: Client) -> None:
    first = await client.submit_task("echo one", task_type="command", role="cto", dedupe_key="k")
    again = await client.submit_task("echo one", task_type="command", role="cto", dedupe_key="k")
    assert first.created and not again.created and again.task_id == first.task_id
    other = await client.submit_task("noop", task_type="noop", priority=5)
    listed = await client.tasks()
    assert [t.task_id for t in listed] == [other.task_id, first.task_id]
    assert [t.task_id for t in await client.tasks(role="cto")] == [first.task_id]
    assert [t.task_id for t in await client.tasks(status="pending", limit=1)] == [other.task_id]
    assert listed[0].attempt == 0 and listed[0].max_retries == 3

    assert await client.cancel_task(first.task_id) == "pending"
    with pytest.raises(UsageError, match="already cancelled"):
        await client.cancel_task(first.task_id)
    await client.retry_task(first.task_id)
    detail = await client.task(first.task_id)
    assert detail.task["status"] == "pending" and detail.task["task_description"] == "echo one"
    assert [h.action for h in detail.history][-2:] == ["task.cancelled", "task.requeued"]
    with pytest.raises(NotFound, match="no task 999999"):
        await client.task(999_999)


async def test_workflow_start_list_show_cancel(client: Client, db: dbmod.Database) -> None:
    with pytest.raises(NoAgentsUp, match="echoctl up"):
        await client.start_workflow("Nobody is here")
    assert await count(db, "workflows") == 0

    await heartbeat(db, "ceo", "cto")
    assert await client.live_roles() == ["ceo", "cto"]
    wf = await client.start_workflow("Move the API", body="two weeks", rounds=1)
    assert wf.phase == Phase.SELECTING and wf.roles == ["ceo", "cto"] and wf.message_id
    assert [w.id for w in await client.workflows()] == [wf.id]

    detail = await client.workflow(wf.id.removeprefix("wf-"))
    assert detail.workflow.id == wf.id and detail.decision is None and detail.participants == []
    assert [m.subject for m in detail.messages] == [f"[{wf.id}] Move the API"]
    assert [a.action for a in detail.timeline] == ["workflow.started"]
    delivered = await client.workflow_delivery(wf.id)
    assert delivered.message_id == wf.message_id and delivered.reached == []

    assert await client.cancel_workflow(wf.id) == Phase.SELECTING
    cancelled = await client.workflow(wf.id)
    assert cancelled.workflow.phase == Phase.CANCELLED and cancelled.workflow.finished_at
    assert cancelled.timeline[-1].action == "workflow.cancelled"
    assert (await client.wait_workflow(wf.id, within=1)).phase == Phase.CANCELLED
    with pytest.raises(UsageError, match="already cancelled"):
        await client.cancel_workflow(wf.id)
    with pytest.raises(NotFound, match="workflow list"):
        await client.workflow("wf-999")
    with pytest.raises(NotFound):
        await client.cancel_workflow("999")
    assert await client.decisions() == []


async def test_an_unmigrated_namespace_is_one_line_for_every_operation(settings: Settings) -> None:
    bare = settings.model_copy(update={"namespace": settings.namespace + "_bare"})
    async with Client(bare) as c:
        for call in (c.workflows(), c.workflow("wf-1"), c.decisions(), c.tasks(),
                     c.submit_task("x"), c.messages(), c.start_workflow("x", roles=["cto"]),
                     c.broadcast("x")):
            with pytest.raises(MigrationError, match=r"run `echoctl db migrate`"):
                await call
    await dbmod.drop_namespace(bare.database)


async def test_status_reads_the_state_dir_and_postgres(client: Client, db: dbmod.Database) -> None:
    status = await client.status()
    assert status.organisation.state == "never started" and status.organisation.pid is None
    assert {a.role for a in status.agents} >= {"ceo", "cto"}
    assert {a.state for a in status.agents} == {"not started"}

    await heartbeat(db, "cto", state="degraded", reason="database unavailable")
    remote = {a.role: a for a in (await client.status()).agents}
    cto = remote["cto"]
    assert cto.state == "degraded" and cto.reason == "database unavailable"
    assert cto.host == "elsewhere" and cto.pid == 4242 and cto.inbox_lag == 3
    assert cto.heartbeat_age is not None and cto.heartbeat_age >= 0
    local = {a.role: a for a in (await client.status(remote=False)).agents}
    assert local["cto"].state == "not started"


async def test_restart_needs_a_running_organisation(client: Client) -> None:
    with pytest.raises(UnknownRole):
        await client.restart_agent("janitor")
    with pytest.raises(ControlUnavailable, match="echoctl up"):
        await client.restart_agent("cto")


async def test_inbox_is_the_unread_part_of_a_role(client: Client, tmp_path: Path) -> None:
    await client.broadcast("for everyone")
    await client.broadcast("for the chro", to="chro")
    inbox = await client.inbox("cto")
    assert inbox.cursor == 0 and [m.subject for m in inbox.unread] == ["for everyone"]
    assert inbox.state == "not running" and inbox.title


async def test_governor_through_the_client(client: Client, db: dbmod.Database) -> None:
    """A budget set through the client holds back the role's Claude tasks (they say why),
    and `spend` (what the console shows) carries today's spend and the budget."""
    assert await client.set_budget("role", "cto", 0.0) == 0.0
    submitted = await client.submit_task("Review the plan", role="cto")
    [row] = [t for t in await client.tasks(status="pending") if t.task_id == submitted.task_id]
    assert row.waiting is not None and row.waiting.startswith("waiting: budget — cto"), row.waiting
    assert (await client.task(submitted.task_id)).task["waiting"] == row.waiting
    spend = {r["role"]: r for r in await client.spend()}
    assert spend["cto"]["budget_usd"] == 0.0 and spend["cto"]["spent_today_usd"] == 0.0
    shown = await client.budgets()
    assert any(b["scope"] == "role" and b["key"] == "cto" for b in shown["budgets"])
    assert await client.resume_budget() is False  # the breaker is not tripped
    with pytest.raises(UsageError):
        await client.set_budget("role", "nobody", 1.0)
    with pytest.raises(UsageError):
        await client.set_budget("org", "", -1.0)
