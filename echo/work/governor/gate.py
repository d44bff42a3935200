"""What decides whether a Claude run may start: the gate's parameters and its view.

The decision itself is made in Postgres, inside the claim statement
(`claude_gate` and `claude_may_start` in 010_governor.sql), so it holds across any
number of workers and machines. This module holds what a worker sends with each
claim (`ClaimGate`: its clock, the organisation's time zone, its account) and the
same decision read back for people (`GateView.reason`): why a task is waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from echo.slices import GovernorSettings

#: Task types whose runs cost money: the gate holds them; the others never wait.
GOVERNED = ("claude",)

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class ClaimGate:
    """A worker's governor parameters for the claim statement. `clock` None: the
    database's clock decides (production); tests inject one to cross a day boundary."""

    timezone: str = "UTC"
    account: str = "default"
    role_accounts: Mapping[str, str] = field(default_factory=dict)
    clock: Clock | None = None
    governed: tuple[str, ...] = GOVERNED

    @classmethod
    def from_settings(cls, settings: GovernorSettings, *, role_accounts: Mapping[str, str] | None = None,
                      clock: Clock | None = None) -> ClaimGate:
        return cls(settings.budget_timezone, settings.claude_account, dict(role_accounts or {}),
                   clock)

    def account_of(self, role: str | None) -> str:
        return self.role_accounts.get(role or "", self.account)

    def now(self) -> datetime | None:
        return self.clock() if self.clock is not None else None

    def params(self) -> tuple[datetime | None, str, list[str], str, dict[str, str]]:
        """$12-$16 of complete_and_claim: clock, zone, governed types, account, role accounts."""
        return (self.now(), self.timezone, list(self.governed), self.account,
                dict(self.role_accounts))


def money(value: float) -> str:
    return f"${value:,.2f}"


@dataclass(frozen=True)
class Pause:
    account: str
    until: datetime
    reason: str
    details: dict[str, Any]

    def describe(self, timezone: str = "UTC") -> str:
        if self.account == "*":
            d = self.details
            figures = ""
            if "spent_usd" in d:
                figures = (f" — {money(float(d['spent_usd']))} spent in {float(d['minutes']):g} min "
                           f"(limit {money(float(d['burst_usd']))})")
            return f"paused: burn-rate breaker{figures}; `echoctl budget resume` to go on"
        local = self.until.astimezone(ZoneInfo(timezone))
        return f"paused until {local:%H:%M} {timezone} ({self.reason})"


@dataclass(frozen=True)
class Spent:
    scope: str
    key: str
    spent_usd: float
    budget_usd: float

    @property
    def exhausted(self) -> bool:
        return self.spent_usd >= self.budget_usd

    def describe(self) -> str:
        who = {"org": "the organisation", "role": self.key,
               "workflow": f"workflow {self.key}"}[self.scope]
        return f"budget — {who} spent {money(self.spent_usd)} of {money(self.budget_usd)} today"


@dataclass(frozen=True)
class GateView:
    """The gate as the claim sees it now: budgets with today's spend, and pauses."""

    budgets: dict[str, Spent]  # "role:cto" -> spend and budget
    pauses: dict[str, Pause]   # account ("*": the breaker) -> pause
    timezone: str = "UTC"

    def blocker(self, role: str | None, workflow: str | None, account: str) -> str | None:
        """Why a governed run of (role, workflow, account) cannot start now; None if it can."""
        for key in ("*", account):
            if key in self.pauses:
                return self.pauses[key].describe(self.timezone)
        for key in ("org:", f"role:{role or ''}", f"workflow:{workflow or ''}"):
            spent = self.budgets.get(key)
            if spent is not None and spent.exhausted:
                return spent.describe()
        return None

    def reason(self, row: Mapping[str, Any], gate: ClaimGate) -> str | None:
        """`waiting: ...` for a pending task row the gate holds up; None otherwise."""
        if row.get("status") != "pending" or row.get("task_type") not in gate.governed:
            return None
        payload = row.get("payload") or {}
        workflow = row.get("workflow") or (payload.get("workflow") if isinstance(payload, dict)
                                           else None)
        role = row.get("assigned_role")
        why = self.blocker(role, workflow, gate.account_of(role))
        return f"waiting: {why}" if why else None
