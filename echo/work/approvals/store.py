"""`ApprovalStore`: the `approvals` table (shared/sql/024_approvals.sql), every query of it.

What each entry point may do is the point of this module:

- the hook (`check_call`) records a request and reads its answer; it never decides;
- the operator's entry points (`decide`, through `echo.org.client`) decide a pending
  request and queue its task again, with the decider named in the audit trail;
- every worker's rescue loop runs `sweep`: requests past their time expire, and a
  task whose requests were all decided before its run was stored is queued again.

Time is the database's `now()`; `clock` (tests) replaces it in every statement that
compares with `expires_at`. The audit rows are written by the table's trigger.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from echo.db import Database, load_queries
from echo.errors import AlreadyDecided, NotFound, UsageError

_Q = load_queries("approvals")

KINDS = ("tool", "merge", "budget")
STATES = ("pending", "approved", "denied", "expired", "used")
#: The largest reason stored (a longer one is cut).
MAX_REASON = 2000


class Approval(BaseModel):
    """One request, as `approvals list/show`, the API and the hook see it."""

    id: int
    kind: str
    role: str | None = None
    task_id: int | None = None
    tool_name: str | None = None
    input: dict[str, Any] = {}
    session_id: str | None = None
    tool_use_id: str | None = None
    state: str
    reason: str | None = None
    requested_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    expires_at: datetime

    @classmethod
    def of(cls, row: Any) -> Approval:
        data = {k: v for k, v in dict(row).items() if k in cls.model_fields}
        return cls.model_validate(data)

    def summary(self) -> str:
        """What was asked, in one line: `Bash: git push origin main`, `merge task-7 into main`."""
        if self.kind == "tool":
            shown = self.input.get("command") or self.input.get("file_path") \
                or json.dumps(self.input, sort_keys=True)
            return f"{self.tool_name}: {shown}"
        if self.kind == "merge":
            return (f"merge {self.input.get('branch', '?')} into "
                    f"{self.input.get('base', '?')} of {self.input.get('repo', '?')}")
        if self.kind == "budget":
            return (f"daily budget of {self.input.get('role', '?')} to "
                    f"${float(self.input.get('daily_usd', 0)):.2f}: {self.input.get('reason', '')}")
        return json.dumps(self.input, sort_keys=True)


Answer = Literal["allow", "defer", "deny"]


@dataclass(frozen=True)
class CallAnswer:
    """The hook's answer to one gated call, and the request it concerns."""

    decision: Answer
    approval: Approval | None  # None: the call's own request was used up already
    reason: str = ""


def decision_note(request: Approval) -> str:
    """What a run resumed after a decision is told about it."""
    what = request.summary()
    if request.state in ("approved", "used"):
        return f"An operator approved your call ({what}); it has been made."
    who = f" by {request.decided_by}" if request.decided_by not in (None, "system") else ""
    return (f"Your call ({what}) was refused{who}: {request.reason or request.state}. "
            "Do not try it again; go on without it, or stop and say why.")


def input_hash(tool_input: Mapping[str, Any]) -> str:
    return hashlib.md5(json.dumps(dict(tool_input), sort_keys=True).encode(),
                       usedforsecurity=False).hexdigest()


def check_state(value: str | None) -> str | None:
    if value is not None and value not in STATES:
        raise UsageError(f"unknown approval state {value!r}; use {', '.join(STATES)}")
    return value


class ApprovalStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    # ----------------------------------------------------------------- the hook
    async def check_call(self, *, task_id: int, role: str | None, tool: str,
                         tool_input: Mapping[str, Any], session_id: str | None,
                         tool_use_id: str | None, expires_in: float,
                         clock: datetime | None = None) -> CallAnswer:
        """What the hook answers for a gated call: a new request (defer), a pending one
        (defer), an approved one (allow, and it is used up), a denied or expired one
        (deny, with the reason)."""
        digest = input_hash(tool_input)
        async with self.db.transaction() as conn:
            await conn.execute(_Q["expire_task"], task_id, clock)
            row = await conn.fetchrow(_Q["find_call"], task_id, tool_use_id, session_id, tool,
                                      digest)
            if row is None:
                row = await conn.fetchrow(_Q["insert_call"], role, task_id, tool,
                                          dict(tool_input), digest, session_id, tool_use_id,
                                          float(expires_in), clock)
                if row is None:  # a concurrent hook of the same call inserted it
                    row = await conn.fetchrow(_Q["find_call"], task_id, tool_use_id,
                                              session_id, tool, digest)
            if row is None:  # this very call's request was approved and used up already
                return CallAnswer("deny", None, "its approval was used already (the run "
                                  "was interrupted after it); make the call again to ask anew")
            approval = Approval.of(row)
            if approval.state == "approved":
                used = await conn.fetchval(_Q["use"], approval.id)
                if used is not None:
                    return CallAnswer("allow", approval, approval.reason or "approved")
        if approval.state in ("denied", "expired"):
            return CallAnswer("deny", approval, approval.reason or approval.state)
        return CallAnswer("defer", approval)

    # ------------------------------------------------------------- the operator
    async def decide(self, approval_id: int, *, approve: bool, by: str, reason: str | None = None,
                     clock: datetime | None = None) -> Approval:
        """Approve or deny a pending request and queue its task again; `NotFound` for no
        such request, `AlreadyDecided` (one line) for one decided, used or expired."""
        state = "approved" if approve else "denied"
        text = (reason or "").strip()[:MAX_REASON] or None
        if not approve and text is None:
            raise UsageError("a denial needs a reason (--reason TEXT): the run is told it")
        async with self.db.transaction() as conn:
            await conn.execute(_Q["set_actor"], by)
            row = await conn.fetchrow(_Q["decide"], approval_id, state, text, by, clock)
            if row is not None:
                if row["task_id"] is not None:
                    await conn.fetch(_Q["wake_task"], row["task_id"])
                return Approval.of(row)
            expired = await conn.fetchval(_Q["expire_one"], approval_id, clock)
            if expired is not None:
                current = await conn.fetchrow(_Q["get"], approval_id)
                if current is not None and current["task_id"] is not None:
                    await conn.fetch(_Q["wake_task"], current["task_id"])
            else:
                current = await conn.fetchrow(_Q["get"], approval_id)
        if current is None:
            raise NotFound(f"no approval request {approval_id}; `echoctl approvals list` "
                           "shows them")
        found = Approval.of(current)
        by_whom = f" by {found.decided_by}" if found.decided_by else ""
        raise AlreadyDecided(f"approval request {approval_id} is already {found.state}{by_whom}; "
                             "only a pending request can be decided")

    async def sweep(self, *, clock: datetime | None = None) -> list[int]:
        """Expire requests past their time; queue again the tasks no request holds. The
        ids of the tasks queued again."""
        async with self.db.acquire() as conn:  # one statement; its audit rows say `system`
            return [r["task_id"] for r in await conn.fetch(_Q["sweep"], clock)]

    # ------------------------------------------------------------------ reading
    async def get(self, approval_id: int) -> Approval:
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(_Q["get"], approval_id)
        if row is None:
            raise NotFound(f"no approval request {approval_id}; `echoctl approvals list` "
                           "shows them")
        return Approval.of(row)

    async def requests(self, *, state: str | None = None, task_id: int | None = None,
                       limit: int = 100) -> list[Approval]:
        check_state(state)
        async with self.db.acquire() as conn:
            rows = await conn.fetch(_Q["list"], state, task_id, limit)
        return [Approval.of(r) for r in rows]

    async def of_task(self, task_id: int) -> list[Approval]:
        async with self.db.acquire() as conn:
            return [Approval.of(r) for r in await conn.fetch(_Q["of_task"], task_id)]

    async def history(self, approval_id: int) -> list[dict[str, Any]]:
        async with self.db.acquire() as conn:
            return [dict(r) for r in await conn.fetch(_Q["history"], str(approval_id))]

    # ---------------------------------------------------------- the merge queue
    async def merge_request(self, *, task_id: int, role: str | None, details: Mapping[str, Any],
                            expires_in: float, clock: datetime | None = None) -> Approval:
        """The merge request of a task's commit (`details["head"]`): the one about that
        commit if it is pending, approved, denied or expired; else a new pending one (a
        live request about an earlier commit is superseded: expired)."""
        async with self.db.transaction() as conn:
            await conn.execute(_Q["set_actor"], "merge-queue")
            await conn.execute(_Q["expire_task"], task_id, clock)
            row = await conn.fetchrow(_Q["merge_request"], task_id)
            same = row is not None and (row["input"] or {}).get("head") == details.get("head")
            if same and row is not None and row["state"] != "used":
                return Approval.of(row)
            if row is not None and not same and row["state"] in ("pending", "approved"):
                await conn.execute(_Q["supersede"], row["id"])
            made = await conn.fetchrow(_Q["insert_merge"], role, task_id, dict(details),
                                       float(expires_in), clock)
            assert made is not None
            return Approval.of(made)

    # ------------------------------------------------------------ budget raises
    async def budget_request(self, *, role: str, daily_usd: float, reason: str,
                             expires_in: float, clock: datetime | None = None) -> Approval:
        """A role's request for a daily budget of `daily_usd`; an approval applies it."""
        async with self.db.transaction() as conn:
            await conn.execute(_Q["set_actor"], role)
            row = await conn.fetchrow(_Q["insert_budget"], role,
                                      {"role": role, "daily_usd": daily_usd,
                                       "reason": reason[:MAX_REASON]},
                                      float(expires_in), clock)
        assert row is not None
        return Approval.of(row)

    async def use(self, approval_id: int) -> bool:
        """Take an approval (the merge it allowed happened); False if it was not approved."""
        async with self.db.acquire() as conn:
            return await conn.fetchval(_Q["use"], approval_id) is not None
