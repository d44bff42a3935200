"""What the console's two charts draw, added up from the stores' rows (no SQL here).

- Spend per role through the day: today's ledger per role and hour (the governor's
  day, by the database's clock) as each role's cumulative spend at the end of every
  hour so far, beside its daily budget, so a line that nears its budget is seen
  before the claim starts holding work back.
- Tasks finished per minute: the tasks that ended in the last minutes, per minute and
  outcome (the words of `echo.work.OUTCOMES`: a failure because Claude was unavailable
  is `skipped`), oldest minute first.

The client (`Client.spend_chart`, `Client.finished_chart`) reads the rows; these
functions only add them up, so they are unit-tested without Postgres.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from pydantic import BaseModel

from echo.errors import UsageError
from echo.work import OUTCOMES

#: The finished-tasks chart spans at most a day of minutes.
MAX_MINUTES = 24 * 60
#: A ledger row of no role (a run outside any role) is drawn under this name.
NO_ROLE = "(none)"


class RoleSpend(BaseModel):
    """One role's line: `hourly[h]` is what it had spent by the end of hour h today
    (the last entry is the hour now running); `budget_usd` None: no budget."""

    role: str
    budget_usd: float | None = None
    spent_usd: float
    runs: int
    hourly: list[float]


class SpendChart(BaseModel):
    day: date
    hour: int
    timezone: str
    roles: list[RoleSpend]


class FinishedChart(BaseModel):
    """`counts[i]` is the tasks that ended in minute i of the window, per outcome (the
    last entry is the minute now running); `outcomes` lists the outcomes seen."""

    minutes: int
    outcomes: list[str]
    counts: list[dict[str, int]]
    total: dict[str, int]


def check_minutes(value: int) -> int:
    if not 1 <= value <= MAX_MINUTES:
        raise UsageError(f"minutes must be between 1 and {MAX_MINUTES}, not {value}")
    return value


def spend_chart(day: date, hour: int, timezone: str, rows: Iterable[Mapping[str, Any]],
                budgets: Mapping[str, float | None], *, only: str | None = None) -> SpendChart:
    """Each role with spend today or a budget (or just `only`), by name.

    `rows` are the ledger's (`role`, `hour`, `spent_usd`, `runs`) per role and hour; a
    row dated after `hour` (a clock that moved back) counts in the hour now running."""
    hour = min(max(hour, 0), 23)
    spent: dict[str, list[float]] = {}
    runs: dict[str, int] = {}
    for row in rows:
        role = row["role"] or NO_ROLE
        slots = spent.setdefault(role, [0.0] * (hour + 1))
        slots[min(max(int(row["hour"]), 0), hour)] += float(row["spent_usd"])
        runs[role] = runs.get(role, 0) + int(row.get("runs") or 0)
    names = sorted(set(spent) | {r for r in budgets if budgets[r] is not None})
    if only is not None:
        names = [n for n in names if n == only] or [only]
    lines = []
    for name in names:
        total, hourly = 0.0, []
        for amount in spent.get(name, [0.0] * (hour + 1)):
            total += amount
            hourly.append(round(total, 6))
        lines.append(RoleSpend(role=name, budget_usd=budgets.get(name), spent_usd=round(total, 6),
                               runs=runs.get(name, 0), hourly=hourly))
    return SpendChart(day=day, hour=hour, timezone=timezone, roles=lines)


def finished_chart(rows: Iterable[Mapping[str, Any]], minutes: int) -> FinishedChart:
    """`rows` are (`ago`: whole minutes before now, `outcome`, `n`); rows outside the
    window are left out."""
    check_minutes(minutes)
    counts: list[dict[str, int]] = [{} for _ in range(minutes)]
    total: dict[str, int] = {}
    for row in rows:
        ago = int(row["ago"])
        if not 0 <= ago < minutes:
            continue
        slot = counts[minutes - 1 - ago]
        outcome = str(row["outcome"])
        slot[outcome] = slot.get(outcome, 0) + int(row["n"])
        total[outcome] = total.get(outcome, 0) + int(row["n"])
    seen = [o for o in OUTCOMES if o in total] + sorted(set(total) - set(OUTCOMES))
    return FinishedChart(minutes=minutes, outcomes=seen, counts=counts, total=total)
