"""The client's approvals: the requests that need a person's yes, and the decision.

Only the operator's entry points (the CLI, the console) decide; a role may only ask
(`request_budget`). An approved budget request is applied at once, audited.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from echo.errors import UsageError
from echo.org.client_base import ClientBase
from echo.org.governance import synced_governor
from echo.org.inputs import check_decider, check_id
from echo.org.roles import check_role, role_names
from echo.org.views import ApprovalDetail, TaskEvent
from echo.work.approvals import Approval, ApprovalStore
from echo.work.approvals.store import check_state as check_approval_state
from echo.work.governor import check_amount


class ApprovalOps(ClientBase):
    """Approval requests: list, show, approve, deny, and a role's budget request."""

    @contextlib.asynccontextmanager
    async def _approvals(self) -> AsyncIterator[ApprovalStore]:
        with self._migrated():
            yield ApprovalStore(await self.database())

    async def approvals(self, *, state: str | None = None, task_id: int | None = None,
                        limit: int = 100) -> list[Approval]:
        """Approval requests, newest first, optionally of one state or task."""
        check_approval_state(state)
        if task_id is not None:
            check_id(task_id)
        async with self._approvals() as store:
            return await store.requests(state=state, task_id=task_id, limit=limit)

    async def approval(self, approval_id: int) -> ApprovalDetail:
        """One request and its audit trail; `NotFound` if there is none."""
        check_id(approval_id, "approval id")
        async with self._approvals() as store:
            found = await store.get(approval_id)
            history = await store.history(approval_id)
        return ApprovalDetail(approval=found, history=[TaskEvent.model_validate(h) for h in history])

    async def approve(self, approval_id: int, *, by: str) -> Approval:
        """Approve a pending request (its task runs again and the call is made once).
        `by` names the operator in the audit trail. A run never reaches this: only the
        operator's entry points (the CLI, the console) call it."""
        check_id(approval_id, "approval id")
        async with self._approvals() as store:
            done = await store.decide(approval_id, approve=True, by=check_decider(by))
            if done.kind == "budget" and done.role is not None:  # applied at once, audited
                governor = await synced_governor(self.settings, store.db, sync=False)
                await governor.set_budget("role", done.role, float(done.input["daily_usd"]),
                                          actor=done.decided_by or "operator",
                                          known_roles=role_names(self.settings.agents_dir))
                await store.use(done.id)
                done = await store.get(done.id)
            return done

    async def request_budget(self, role: str, daily_usd: float, reason: str) -> Approval:
        """`role` asks for a daily budget of `daily_usd` (a request an operator decides:
        a role never raises its own budget). For the role's own entry points (MCP)."""
        check_role(role, self.settings.agents_dir)
        amount = check_amount(daily_usd)
        if not reason.strip():
            raise UsageError("a budget request needs a reason")
        async with self._approvals() as store:
            return await store.budget_request(role=role, daily_usd=amount, reason=reason.strip(),
                                              expires_in=self.settings.approval_timeout)

    async def deny(self, approval_id: int, reason: str, *, by: str) -> Approval:
        """Deny a pending request with `reason`, which the resumed run is told."""
        check_id(approval_id, "approval id")
        async with self._approvals() as store:
            return await store.decide(approval_id, approve=False, by=check_decider(by),
                                      reason=reason)
