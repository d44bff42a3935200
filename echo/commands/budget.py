"""`echoctl budget ...` and `echoctl spend`: the governor from the command line.

Every command calls the client (echo.org.client), which calls the governor
(echo.work.governor); no SQL here, only rendering.
A budget set here is stored in Postgres, audited in agent_actions and holds at the
next claim of every worker on every machine.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from echo.commands._common import JsonOpt, console, emit_json, settings, with_client
from echo.errors import UsageError
from echo.work.governor import SpendReport
from echo.work.governor.gate import money

budget_app = typer.Typer(help="Daily Claude budgets (organisation, role, workflow) and the "
                              "burn-rate breaker.", no_args_is_help=True)


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
    scope, key = ("org", "") if org else ("role", role) if role is not None else ("workflow", workflow)
    assert key is not None
    amount = with_client(s, lambda c: c.set_budget(scope, key, daily_usd))
    who = "the organisation" if org else f"{scope} {key}"
    console.print(f"daily budget of {escape(who)}: {money(amount)}")


@budget_app.command("show")
def show(ctx: typer.Context, json_out: bool = JsonOpt) -> None:
    """Every budget with today's spend, and the pauses in force."""
    s = settings(ctx)

    data = with_client(s, lambda c: c.budgets())
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
    lifted = with_client(s, lambda c: c.resume_budget())
    if not lifted:
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
    report: SpendReport = with_client(s, lambda c: c.spend_report(by=by, since=since))
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


def governor_lines(summary: dict[str, Any] | None) -> list[str]:
    """`claude: paused until 02:19 UTC (session limit)`, `cto: waiting: budget — ...`."""
    if not summary:
        return []
    lines = [f"[yellow]claude ({escape(p['account'])}): {escape(p['text'])}[/]"
             for p in summary["paused"]]
    lines += [f"[yellow]{escape(role)}: waiting: {escape(why)}[/]"
              for role, why in summary["waiting"].items()
              if not any(why == p["text"] for p in summary["paused"])]
    lines += [f"[yellow]{u['count']} pending {escape(u['task_type'])} task(s) "
              f"{'for ' + escape(u['role']) if u['role'] else 'without a role'}: "
              f"{escape(u['text'])}[/]" for u in summary.get("unclaimed", ())]
    return lines
