"""`echoctl budget ...` and `echoctl spend`: the governor from the command line.

Every command calls the governor's functions (echo.work.governor); no SQL here.
A budget set here is stored in Postgres, audited in agent_actions and holds at the
next claim of every worker on every machine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import typer
from rich.markup import escape
from rich.table import Table

from echo.commands._common import JsonOpt, console, emit_json, run, settings
from echo.config import Settings
from echo.db import Database
from echo.errors import UsageError
from echo.org.roles import load_roles, role_names
from echo.work.governor import Governor, SpendReport, check_amount, spend_report
from echo.work.governor.gate import money

T = TypeVar("T")

budget_app = typer.Typer(help="Daily Claude budgets (organisation, role, workflow) and the "
                              "burn-rate breaker.", no_args_is_help=True)


def governor_for(s: Settings, database: Database) -> Governor:
    """The organisation's governor as configured: each role's account from its file."""
    roles = load_roles(s.agents_dir)
    return Governor(s, database, role_accounts={
        name: r.claude.account for name, r in roles.items() if r.claude.account})


async def with_governor(s: Settings, fn: Callable[[Governor], Awaitable[T]], *,
                        sync: bool = True) -> T:
    """Open the database, write the configured defaults (what the agents do at start),
    and run `fn` with the governor."""
    database = await Database.open(s, max_size=1)
    try:
        governor = governor_for(s, database)
        if sync:
            roles = load_roles(s.agents_dir)
            await governor.sync({name: r.budget.daily_usd for name, r in roles.items()})
        return await fn(governor)
    finally:
        await database.close()


@budget_app.command("set")
def set_budget(
    ctx: typer.Context,
    daily_usd: float = typer.Option(..., "--daily-usd", help="USD per day; 0 stops the runs."),
    org: bool = typer.Option(False, "--org", help="The organisation's budget."),
    role: str | None = typer.Option(None, "--role", help="A role's budget."),
    workflow: str | None = typer.Option(None, "--workflow", help="One workflow's budget."),
) -> None:
    """Set a daily budget, effective at once on every machine (audited)."""
    s = settings(ctx)
    chosen = [name for name, on in (("--org", org), ("--role", role is not None),
                                    ("--workflow", workflow is not None)) if on]
    if len(chosen) != 1:
        raise UsageError("name exactly one of --org, --role ROLE or --workflow ID")
    amount = check_amount(daily_usd)
    if role is not None and role not in role_names(s.agents_dir):
        known = ", ".join(role_names(s.agents_dir)) or "none"
        raise UsageError(f"unknown role {role!r}; known roles: {known}")
    scope, key = ("org", "") if org else ("role", role) if role is not None else ("workflow", workflow)
    assert key is not None
    run(lambda: with_governor(s, lambda g: g.set_budget(
        scope, key, amount, known_roles=role_names(s.agents_dir))))
    who = "the organisation" if org else f"{scope} {key}"
    console.print(f"daily budget of {escape(who)}: {money(amount)}")


@budget_app.command("show")
def show(ctx: typer.Context, json_out: bool = JsonOpt) -> None:
    """Every budget with today's spend, and the pauses in force."""
    s = settings(ctx)

    async def body(g: Governor) -> dict[str, Any]:
        return {"budgets": await g.budgets(),
                "paused": [{"account": p.account, "until": p.until, "reason": p.reason,
                            "text": p.describe(g.gate.timezone)} for p in await g.pauses()],
                "billing": s.claude_billing, "timezone": s.budget_timezone}

    data = run(lambda: with_governor(s, body))
    if json_out:
        emit_json(data)
        return
    if not data["budgets"]:
        console.print("no budgets: set one with `echoctl budget set --role ROLE --daily-usd X`")
    else:
        table = Table("scope", "name", "daily", "spent today", "left", "runs", "from")
        for b in data["budgets"]:
            table.add_row(b["scope"], b["key"] or "-", money(b["daily_usd"]), money(b["spent_usd"]),
                          money(b["left_usd"]), str(b["runs"]), b["source"])
        console.print(table)
    for p in data["paused"]:
        console.print(f"[yellow]{escape(p['account'])}: {escape(p['text'])}[/]")
    if s.claude_billing == "subscription":
        console.print("billing: subscription — costs are the CLI's list-price estimates")


@budget_app.command("resume")
def resume(ctx: typer.Context) -> None:
    """Lift the burn-rate breaker: Claude work starts again (audited)."""
    s = settings(ctx)
    lifted = run(lambda: with_governor(s, lambda g: g.resume(), sync=False))
    if lifted is None:
        console.print("the burn-rate breaker is not tripped; nothing to resume")
    else:
        console.print("burn-rate breaker lifted: Claude work resumes")


def spend(
    ctx: typer.Context,
    by: str = typer.Option("role", "--by", help="role, workflow, day or account."),
    since: str | None = typer.Option(None, "--since", help="YYYY-MM-DD or Nd (default: today)."),
    json_out: bool = JsonOpt,
) -> None:
    """What Claude cost today against the budgets, and the ledger grouped --by."""
    s = settings(ctx)
    report: SpendReport = run(lambda: with_governor(
        s, lambda g: spend_report(g, by=by, since=since, roles=role_names(s.agents_dir))))
    if json_out:
        emit_json(report.model_dump(mode="json"))
        return
    note = " (estimates: subscription billing)" if report.estimated else ""
    budget = f" of {money(report.org.budget_usd)}" if report.org.budget_usd is not None else ""
    console.print(f"{report.day} ({report.timezone}): the organisation spent "
                  f"{money(report.org.spent_usd)}{budget} in {report.org.runs} runs{note}")
    table = Table("role", "spent today", "budget", "runs", "waiting")
    for r in report.roles:
        table.add_row(r.role, money(r.spent_usd),
                      money(r.budget_usd) if r.budget_usd is not None else "-", str(r.runs),
                      f"{r.waiting} ({r.reason})" if r.waiting else "0")
    console.print(table)
    if report.by != "role" or report.since != report.day:
        rows = Table(report.by, "spent", "runs", "failed", "tokens in", "tokens out",
                     title=f"since {report.since}")
        for row in report.rows:
            rows.add_row(row.key or "-", money(row.spent_usd), str(row.runs), str(row.failed_runs),
                         str(row.input_tokens), str(row.output_tokens))
        console.print(rows)
    for p in report.paused:
        console.print(f"[yellow]{escape(p.account)}: {escape(p.text)}[/]")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(budget_app, name="budget")
    app.command("spend")(spend)


async def governor_summary(s: Settings, roles: list[str]) -> dict[str, Any] | None:
    """What `status` and `echoctl claude` say about the governor: the pauses in force
    and, per role, why its Claude runs wait. Database errors reach the caller; None
    when the embedded database is not running (looking must not start it)."""
    from echo.db import embedded_server

    if not s.database_url and embedded_server(s).running_pid() is None:
        return None
    database = await Database.open(s.model_copy(update={"connect_timeout": 1.5}),
                                   min_size=0, max_size=1)
    try:
        with anyio.fail_after(3):
            governor = governor_for(s, database)
            view = await governor.view()
    finally:
        await database.close()
    held = {role: why for role in roles
            if (why := view.blocker(role, None, governor.gate.account_of(role)))}
    return {"paused": [{"account": p.account, "text": p.describe(view.timezone)}
                       for p in view.pauses.values()],
            "waiting": held, "billing": s.claude_billing}


def governor_lines(summary: dict[str, Any] | None) -> list[str]:
    """`claude: paused until 02:19 UTC (session limit)`, `cto: waiting: budget — ...`."""
    if not summary:
        return []
    lines = [f"[yellow]claude ({escape(p['account'])}): {escape(p['text'])}[/]"
             for p in summary["paused"]]
    lines += [f"[yellow]{escape(role)}: waiting: {escape(why)}[/]"
              for role, why in summary["waiting"].items()
              if not any(why == p["text"] for p in summary["paused"])]
    return lines


async def annotate_waiting(s: Settings, database: Database,
                           rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add `waiting` (`waiting: budget — cto spent $6.30 of $5.00 today`) to each
    pending Claude task the governor holds up now."""
    if any(r.get("status") == "pending" for r in rows):
        governor = governor_for(s, database)
        view = await governor.view()
        for row in rows:
            row["waiting"] = view.reason(row, governor.gate)
    return rows
