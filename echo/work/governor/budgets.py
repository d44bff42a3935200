"""The Governor: budgets, pauses and the ledger, as one object over Postgres.

Everything it knows lives in Postgres (010_governor.sql), so what one process sets
(`echoctl budget set`, a usage limit met by a worker) holds at once for every
worker and agent on every machine. Budgets come from configuration
(`[budget] daily_usd` in config/*.toml and agents/<role>/role.toml), written by
each process at start (`sync`), and from the operator, whose value wins.

The claim statement applies the gate to tasks; `check` applies the same gate to a
workflow question before its CLI starts, and `record` writes the question's ledger
row afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from echo.db import Database, load_queries
from echo.errors import ClaudeHeld, UsageError
from echo.slices import GovernorSettings
from echo.work.governor.gate import ClaimGate, Clock, GateView, Pause, Spent
from echo.work.governor.ledger import RunRecord, ledger_rows

_Q = load_queries("governor")

SCOPES = ("org", "role", "workflow")
MAX_DAILY_USD = 1_000_000.0


def check_amount(daily_usd: float) -> float:
    """A daily budget a user typed: a number of dollars, 0 or more."""
    if daily_usd != daily_usd or daily_usd < 0 or daily_usd > MAX_DAILY_USD:  # NaN too
        raise UsageError(f"--daily-usd must be between 0 and {MAX_DAILY_USD:,.0f} "
                         f"(got {daily_usd:g}); 0 stops the runs")
    return round(daily_usd, 2)


class Governor:
    """Budgets, account pauses and the ledger of one organisation.

    `role_accounts` names the account of each role whose role.toml sets `[claude]
    account`; the others use `settings.claude_account`. `clock` (tests) replaces the
    database's clock for the budget day and the pauses.
    """

    def __init__(self, settings: GovernorSettings, database: Database, *,
                 role_accounts: Mapping[str, str] | None = None, clock: Clock | None = None) -> None:
        self.settings = settings
        self.db = database
        self.gate = ClaimGate.from_settings(settings, role_accounts=role_accounts, clock=clock)

    @property
    def estimated(self) -> bool:
        """With a subscription the CLI's cost is a list-price estimate, not a bill."""
        return self.settings.claude_billing == "subscription"

    # ------------------------------------------------------------ configuration
    async def sync(self, role_budgets: Mapping[str, float | None] | None = None) -> None:
        """Write this process's configured defaults: the breaker's threshold, the
        organisation's budget, and the budgets of `role_budgets` (None: no budget)."""
        s = self.settings
        wanted: list[tuple[str, str, float | None]] = [("org", "", s.budget_daily_usd)]
        wanted += [("role", name, value) for name, value in sorted((role_budgets or {}).items())]
        async with self.db.transaction() as conn:
            await conn.execute(_Q["set_actor"], "config")
            await conn.execute(_Q["sync_config"], s.budget_burst_usd, s.budget_burst_minutes)
            await conn.execute(_Q["sync_budgets"], [w[0] for w in wanted], [w[1] for w in wanted],
                               [w[2] for w in wanted])

    async def set_budget(self, scope: str, key: str, daily_usd: float, *,
                         actor: str = "operator", known_roles: Iterable[str] = ()) -> None:
        """An operator's budget, effective at the next claim on every machine; audited."""
        amount = check_amount(daily_usd)
        if scope not in SCOPES:
            raise UsageError(f"unknown budget scope {scope!r}; use --org, --role or --workflow")
        if scope == "role" and key not in set(known_roles):
            names = ", ".join(sorted(known_roles)) or "none"
            raise UsageError(f"unknown role {key!r}; known roles: {names}")
        async with self.db.transaction() as conn:
            if scope == "workflow" and not await conn.fetchval(_Q["workflow_exists"], key):
                raise UsageError(f"unknown workflow {key!r}; `echoctl workflow list` shows them")
            await conn.execute(_Q["set_actor"], actor)
            await conn.execute(_Q["set_budget"], scope, "" if scope == "org" else key, amount)

    # ------------------------------------------------------------------- reading
    async def today(self) -> date:
        async with self.db.acquire() as conn:
            day: date = await conn.fetchval(_Q["today"], self.gate.now(), self.gate.timezone)
        return day

    async def view(self) -> GateView:
        """Budgets with today's spend, and the pauses in force: what the claim sees."""
        async with self.db.acquire() as conn:
            day = await conn.fetchval(_Q["today"], self.gate.now(), self.gate.timezone)
            budgets = await conn.fetch(_Q["budgets"], day)
            pauses = await conn.fetch(_Q["pauses"], self.gate.now())
        return GateView(
            {f"{b['scope']}:{b['key']}": Spent(b["scope"], b["key"], b["spent_usd"], b["daily_usd"])
             for b in budgets},
            {p["account"]: Pause(p["account"], p["until"], p["reason"], p["details"] or {})
             for p in pauses},
            self.gate.timezone)

    async def budgets(self) -> list[dict[str, Any]]:
        """Every budget, with today's spend and what is left."""
        async with self.db.acquire() as conn:
            day = await conn.fetchval(_Q["today"], self.gate.now(), self.gate.timezone)
            rows = await conn.fetch(_Q["budgets"], day)
        return [{**dict(r), "day": day, "left_usd": round(r["daily_usd"] - r["spent_usd"], 6)}
                for r in rows]

    async def spend_by_hour(self) -> tuple[date, int, list[dict[str, Any]]]:
        """Today (the governor's day by its clock: the database's unless injected), the
        hour of it now, and today's ledger per role and hour (`role`, `hour`,
        `spent_usd`, `runs`)."""
        async with self.db.acquire() as conn:
            clock = await conn.fetchrow(_Q["clock"], self.gate.now(), self.gate.timezone)
            assert clock is not None  # a SELECT of values: always one row
            rows = await conn.fetch(_Q["spend_by_hour"], clock["day"], self.gate.timezone)
        return clock["day"], int(clock["hour"]), [dict(r) for r in rows]

    async def pauses(self) -> list[Pause]:
        return list((await self.view()).pauses.values())

    # ----------------------------------------------------- questions (no queue)
    async def check(self, role: str | None, workflow: str | None = None) -> None:
        """Raise `ClaudeHeld` (with the reason) if a run for `role` may not start now."""
        why = (await self.view()).blocker(role, workflow, self.gate.account_of(role))
        if why is not None:
            raise ClaudeHeld(why)

    async def record(self, runs: Sequence[RunRecord]) -> None:
        """Ledger rows of runs made outside the queue, and the pauses they met."""
        if runs:
            async with self.db.acquire() as conn:
                await conn.execute(_Q["record_runs"], ledger_rows(list(runs)), self.gate.now(),
                                   self.gate.timezone)

    # ----------------------------------------------------------------- breaker
    async def resume(self, *, actor: str = "operator") -> Pause | None:
        """Lift the burn-rate breaker (audited); the pause it was, or None."""
        async with self.db.transaction() as conn:
            await conn.execute(_Q["set_actor"], actor)
            row = await conn.fetchrow(_Q["resume"])
        if row is None:
            return None
        return Pause("*", datetime.max, row["reason"], row["details"] or {})

    async def runs_of_task(self, task_id: int) -> list[dict[str, Any]]:
        async with self.db.acquire() as conn:
            return [dict(r) for r in await conn.fetch(_Q["runs_of_task"], task_id)]
