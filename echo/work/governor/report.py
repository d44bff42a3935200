"""`echoctl spend`: what Claude cost, against the budgets, as one pydantic model.

`spend_report` is the one function the CLI and the console call; its JSON is the
documented shape: `{"day", "org": {"spent_usd", "budget_usd"}, "roles": [{"role",
"spent_usd", "budget_usd", "runs", "waiting"}], ...}`. With a subscription the
figures are list-price estimates, and `estimated` says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel

from echo.db import load_queries
from echo.errors import UsageError
from echo.work.governor.budgets import Governor

_Q = load_queries("governor")

GROUPS = ("role", "workflow", "day", "account")
Group = Literal["role", "workflow", "day", "account"]


class ScopeSpend(BaseModel):
    spent_usd: float
    budget_usd: float | None
    runs: int


class RoleSpend(BaseModel):
    role: str
    spent_usd: float
    budget_usd: float | None
    runs: int
    waiting: int          # pending Claude tasks the gate holds up now
    reason: str | None    # why, when it does


class SpendRow(BaseModel):
    key: str
    spent_usd: float
    runs: int
    failed_runs: int
    input_tokens: int
    output_tokens: int


class PauseView(BaseModel):
    account: str          # "*": the burn-rate breaker
    until: datetime | None
    reason: str
    text: str


class SpendReport(BaseModel):
    day: date
    timezone: str
    billing: Literal["api", "subscription"]
    estimated: bool       # subscription: the CLI's list-price estimate, not a bill
    org: ScopeSpend
    roles: list[RoleSpend]
    by: Group
    since: date
    rows: list[SpendRow]
    paused: list[PauseView]


def parse_since(text: str | None, today: date) -> date:
    """`--since`: an ISO date, or `Nd` (N days before today); default today."""
    if not text:
        return today
    value = text.strip()
    if value.endswith("d") and value[:-1].isdigit():
        return date.fromordinal(today.toordinal() - int(value[:-1]))
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--since {text!r} is not a date; use YYYY-MM-DD or Nd (days ago)") from None


async def spend_report(governor: Governor, *, by: str = "role", since: str | None = None,
                       roles: Iterable[str] = ()) -> SpendReport:
    """Today's spend against every budget, the waiting work, the pauses, and the ledger
    since `since` grouped `by` role, workflow, day or account."""
    if by not in GROUPS:
        raise UsageError(f"unknown grouping {by!r}; use --by {', --by '.join(GROUPS)}")
    view = await governor.view()
    gate = governor.gate
    async with governor.db.acquire() as conn:
        day = await conn.fetchval(_Q["today"], gate.now(), gate.timezone)
        start = parse_since(since, day)
        today = {(r["scope"], r["key"]): r for r in await conn.fetch(_Q["spend_today"], day)}
        grouped = await conn.fetch(_Q["spend_by"], start, by)
        waiting_rows = await conn.fetch(_Q["waiting_tasks"], list(gate.governed))

    def spent(scope: str, key: str) -> tuple[float, int]:
        row = today.get((scope, key))
        return (row["spent_usd"], row["runs"]) if row else (0.0, 0)

    def budget(scope: str, key: str) -> float | None:
        found = view.budgets.get(f"{scope}:{key}")
        return found.budget_usd if found else None

    waiting: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for row in waiting_rows:
        why = view.blocker(row["role"] or None, row["workflow"], gate.account_of(row["role"]))
        if why is not None:
            waiting[row["role"]] = waiting.get(row["role"], 0) + row["n"]
            reasons.setdefault(row["role"], why)
    names = set(roles) | {k for s, k in today if s == "role"} | set(waiting) | {
        b.key for b in view.budgets.values() if b.scope == "role"}
    org_spent, org_runs = spent("org", "")
    return SpendReport(
        day=day, timezone=gate.timezone, billing=governor.settings.claude_billing,
        estimated=governor.estimated,
        org=ScopeSpend(spent_usd=round(org_spent, 6), budget_usd=budget("org", ""), runs=org_runs),
        roles=[RoleSpend(role=name or "(none)", spent_usd=round(spent("role", name)[0], 6),
                         budget_usd=budget("role", name), runs=spent("role", name)[1],
                         waiting=waiting.get(name, 0), reason=reasons.get(name))
               for name in sorted(names)],
        by=by,
        since=start,
        rows=[SpendRow(key=r["key"], spent_usd=round(r["spent_usd"], 6), runs=r["runs"],
                       failed_runs=r["failed_runs"], input_tokens=r["input_tokens"],
                       output_tokens=r["output_tokens"]) for r in grouped],
        paused=[PauseView(account=p.account, until=None if p.account == "*" else p.until,
                          reason=p.reason, text=p.describe(gate.timezone))
                for p in view.pauses.values()],
    )
