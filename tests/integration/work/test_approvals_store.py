"""The approvals store on real Postgres (migration 024): what the hook is answered for
each state of a request, that an approval lets a call through exactly once, that a
decision made before the run was stored still queues its task, expiry by the clock
given (the database's by default), and a role's budget request applied on approval."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from echo.config import Settings
from echo.db import Database
from echo.errors import AlreadyDecided, NotFound, UsageError
from echo.org.client import Client
from echo.work import Failure, TaskQueue
from echo.work.approvals import ApprovalStore
from echo.work.approvals.store import CallAnswer

CALL = {"command": "git push origin main"}


async def check(store: ApprovalStore, task_id: int, tool_use_id: str, *,
                session: str = "s-1", clock: datetime | None = None) -> CallAnswer:
    return await store.check_call(task_id=task_id, role="cto", tool="Bash", tool_input=CALL,
                                  session_id=session, tool_use_id=tool_use_id, expires_in=600,
                                  clock=clock)


async def test_a_request_defers_until_approved_then_allows_exactly_once(db: Database) -> None:
    store = ApprovalStore(db)
    first = await check(store, 1, "toolu_a")
    again = await check(store, 1, "toolu_a")
    assert (first.decision, again.decision) == ("defer", "defer")
    assert first.approval.id == again.approval.id
    await store.decide(first.approval.id, approve=True, by="ops")
    allowed = await check(store, 1, "toolu_a")
    assert allowed.decision == "allow"
    # The run was interrupted after the allow and asks for that very call again: the
    # approval is spent, and the answer says so (it used to be an AssertionError).
    spent = await check(store, 1, "toolu_a")
    assert (spent.decision, spent.approval) == ("deny", None)
    assert "used already" in spent.reason
    # The same call once more (a later, identical call: a new tool_use id) asks anew.
    later = await check(store, 1, "toolu_b")
    assert later.decision == "defer" and later.approval.id != first.approval.id
    assert (await store.get(first.approval.id)).state == "used"
    with pytest.raises(AlreadyDecided, match="is already used by ops"):
        await store.decide(first.approval.id, approve=False, by="ops", reason="x")
    with pytest.raises(NotFound):
        await store.decide(424242, approve=True, by="ops")
    with pytest.raises(UsageError, match="a denial needs a reason"):
        await store.decide(later.approval.id, approve=False, by="ops", reason=" ")


async def test_a_denied_request_is_denied_with_its_reason(db: Database) -> None:
    store = ApprovalStore(db)
    asked = await check(store, 2, "toolu_c")
    await store.decide(asked.approval.id, approve=False, by="ops", reason="not on Fridays")
    denied = await check(store, 2, "toolu_c")
    assert (denied.decision, denied.reason) == ("deny", "not on Fridays")


async def test_expiry_follows_the_clock_it_is_given(db: Database) -> None:
    store = ApprovalStore(db)
    asked = await check(store, 3, "toolu_d")
    expires = asked.approval.expires_at
    assert (await check(store, 3, "toolu_d", clock=expires - timedelta(seconds=1))).decision == "defer"
    late = await check(store, 3, "toolu_d", clock=expires + timedelta(days=400))
    assert (late.decision, late.reason) == ("deny", "expired")
    with pytest.raises(AlreadyDecided, match="already expired"):
        await store.decide(asked.approval.id, approve=True, by="ops")


async def test_a_decision_made_before_the_run_was_stored_still_queues_the_task(
        db: Database) -> None:
    q = TaskQueue(db)
    made = await q.enqueue("push it", task_type="noop")
    [task] = await q.claim(["w:1:0"])
    store = ApprovalStore(db)
    asked = await check(store, made.task_id, "toolu_e")
    await store.decide(asked.approval.id, approve=True, by="ops")
    statuses = await q.fail([Failure(task, "awaiting approval", True, counted=False,
                                     awaiting=True)])
    assert statuses == {made.task_id: "pending"}  # nothing left to wait for
    # With a request still pending it waits, and the sweep wakes it once none is.
    [task] = await q.claim(["w:1:0"])
    pending = await check(store, made.task_id, "toolu_f", session="s-2")
    assert await q.fail([Failure(task, "awaiting approval", True, counted=False,
                                 awaiting=True)]) == {made.task_id: "awaiting_approval"}
    assert await store.sweep() == []
    late = pending.approval.expires_at + timedelta(seconds=1)
    assert await store.sweep(clock=late) == [made.task_id]
    row = await q.get(made.task_id)
    assert (row["status"], row["retry_count"]) == ("pending", 0)


async def test_a_roles_budget_request_is_applied_when_approved(
        settings: Settings, db: Database) -> None:
    async with Client(settings, database=db) as client:
        asked = await client.request_budget("cto", 12.5, "the migration needs more runs")
        assert (asked.kind, asked.state, asked.role) == ("budget", "pending", "cto")
        assert asked.summary() == "daily budget of cto to $12.50: the migration needs more runs"
        done = await client.approve(asked.id, by="ops")
        assert done.state == "used"
        budgets = (await client.budgets())["budgets"]
        assert [(b["key"], b["daily_usd"]) for b in budgets if b["scope"] == "role"
                and b["key"] == "cto"] == [("cto", 12.5)]
        refused = await client.request_budget("cto", 99.0, "more")
        await client.deny(refused.id, "no", by="ops")
        budgets = (await client.budgets())["budgets"]
        assert [b["daily_usd"] for b in budgets if b["key"] == "cto"] == [12.5]
        with pytest.raises(UsageError, match="needs a reason"):
            await client.request_budget("cto", 5.0, " ")
