"""The client's governor: budgets, spend, the burn-rate breaker, and what waits why.

The governor lives in Postgres (echo.work.governor), so a budget set here holds at
the next claim on every machine.
"""

from __future__ import annotations

import contextlib
from typing import Any

from echo.errors import EchoError, UsageError
from echo.org.charts import SpendChart, spend_chart
from echo.org.client_base import ClientBase
from echo.org.governance import governor_summary, synced_governor
from echo.org.roles import check_role, role_names
from echo.work.governor import Governor, SpendReport, check_amount, spend_report


class GovernorOps(ClientBase):
    """The organisation's budgets and spend."""

    async def spend(self) -> list[dict[str, Any]]:
        """The recorded cost of task runs per role: `{"role", "runs", "cost_usd"}`, with
        the governor's figures for today: `spent_today_usd` and `budget_usd` (None: no
        budget), for the roles with a budget or a run today too."""
        async with self._queue() as q:
            rows = await q.spend()
        report = await self.spend_report()
        today = {r.role: r for r in report.roles}
        by_role = {r["role"]: r for r in rows}
        for name in today:
            if name not in by_role and name != "(none)":
                by_role[name] = {"role": name, "runs": 0, "cost_usd": 0.0}
        for name, row in by_role.items():
            found = today.get(name or "(none)")
            row["spent_today_usd"] = found.spent_usd if found else 0.0
            row["budget_usd"] = found.budget_usd if found else None
        return sorted(by_role.values(), key=lambda r: r["role"] or "")

    async def spend_chart(self, *, role: str | None = None) -> SpendChart:
        """Each role's cumulative spend per hour of today (the governor's day by the
        database's clock) beside its daily budget: the console's spend chart."""
        if role is not None:
            check_role(role, self.settings.agents_dir)
        governor = await self.governor(sync=False)  # a read: the agents write the defaults
        with self._migrated():
            day, hour, rows = await governor.spend_by_hour()
            budgets = {b["key"]: b["daily_usd"] for b in await governor.budgets()
                       if b["scope"] == "role"}
        return spend_chart(day, hour, governor.gate.timezone, rows, budgets, only=role)

    async def governor(self, *, sync: bool = True) -> Governor:
        """The organisation's governor, the configured budgets written (as at an agent's start)."""
        with self._migrated():
            return await synced_governor(self.settings, await self.database(), sync=sync)

    async def set_budget(self, scope: str, key: str, daily_usd: float) -> float:
        """Set the daily budget of the organisation (`org`, key ""), a role or a workflow:
        effective at the next claim on every machine, audited. Returns the amount."""
        amount = check_amount(daily_usd)
        known = role_names(self.settings.agents_dir)
        if scope == "role" and key not in known:
            raise UsageError(f"unknown role {key!r}; known roles: {', '.join(known) or 'none'}")
        governor = await self.governor()
        with self._migrated():
            await governor.set_budget(scope, key, amount, known_roles=known)
        return amount

    async def budgets(self) -> dict[str, Any]:
        """Every budget with today's spend, the pauses in force, the billing mode."""
        governor = await self.governor()
        with self._migrated():
            return {"budgets": await governor.budgets(),
                    "paused": [{"account": p.account, "until": p.until, "reason": p.reason,
                                "text": p.describe(governor.gate.timezone)}
                               for p in await governor.pauses()],
                    "billing": self.settings.claude_billing,
                    "timezone": self.settings.budget_timezone}

    async def resume_budget(self) -> bool:
        """Lift the burn-rate breaker (audited); False if it was not tripped."""
        governor = await self.governor(sync=False)
        with self._migrated():
            return await governor.resume() is not None

    async def spend_report(self, *, by: str = "role", since: str | None = None) -> SpendReport:
        """Today's spend against the budgets, what waits and why, the pauses, and the
        ledger since `since` grouped `by` role, workflow, day or account."""
        governor = await self.governor()
        with self._migrated():
            return await spend_report(governor, by=by, since=since,
                                      roles=role_names(self.settings.agents_dir))

    async def governor_summary(self) -> dict[str, Any] | None:
        """The pauses in force and why each role's Claude runs wait (for `status` and
        `echoctl claude`); None when the database is away or not started."""
        with contextlib.suppress(EchoError, TimeoutError, OSError):
            return await governor_summary(self.settings, role_names(self.settings.agents_dir))
        return None
