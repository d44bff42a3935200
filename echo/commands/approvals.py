"""`echoctl approvals ...`: the requests that wait for an operator's yes.

A Claude run that calls a gated tool (a role's `[approval] tools`, the organisation's
`approval_tools`) stops there, and its task waits as `awaiting_approval`; a merge
into a base that requires approval waits too. `approve` lets the call run (once) and
queues the task again; `deny --reason` refuses it and the resumed run is told why.
The decider in the audit trail is the operating-system user who ran the command.
"""

from __future__ import annotations

import json

import typer
from rich.markup import escape

from echo.commands._common import (
    JsonOpt,
    clip,
    console,
    emit_json,
    plain_table,
    role_column,
    settings,
    with_client,
)
from echo.org.inputs import decider_name
from echo.work.approvals import STATES, Approval

approvals_app = typer.Typer(help="Approval requests: list, show, approve, deny.",
                            no_args_is_help=True)


def _line(a: Approval) -> str:
    by = f" by {a.decided_by}" if a.decided_by else ""
    why = f": {a.reason}" if a.reason and a.state != "approved" else ""
    return f"approval request {a.id} {a.state}{by}{why}"


@approvals_app.command("list")
def list_approvals(
    ctx: typer.Context,
    state: str | None = typer.Option(None, "--state", help=", ".join(STATES)),
    task: int | None = typer.Option(None, "--task", help="Only this task's requests."),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000),
    json_out: bool = JsonOpt,
) -> None:
    """Approval requests, newest first."""
    s = settings(ctx)
    rows = with_client(s, lambda c: c.approvals(state=state, task_id=task, limit=limit))
    if json_out:
        emit_json(rows)
        return
    if not rows:
        console.print("no approval requests")
        return
    table = plain_table("id", "kind", "state")
    role_column(table, "role", (r.role for r in rows))
    for name in ("task", "asked", "request"):
        table.add_column(name)
    for r in rows:
        table.add_row(str(r.id), r.kind, r.state, r.role or "", str(r.task_id or ""),
                      f"{r.requested_at:%m-%d %H:%M}", escape(clip(r.summary(), 60)))
    console.print(table)


@approvals_app.command()
def show(ctx: typer.Context, approval_id: int = typer.Argument(...),
         json_out: bool = JsonOpt) -> None:
    """One request: what was asked (its whole input), its state and its history."""
    s = settings(ctx)
    detail = with_client(s, lambda c: c.approval(approval_id))
    if json_out:
        emit_json(detail)
        return
    a = detail.approval
    console.print(f"approval request {a.id}: {a.kind}, {a.state}", highlight=False)
    for label, value in (("role", a.role), ("task", a.task_id), ("tool", a.tool_name),
                         ("session", a.session_id), ("asked", a.requested_at),
                         ("expires", a.expires_at), ("decided", a.decided_at),
                         ("by", a.decided_by), ("reason", a.reason)):
        if value is not None:
            console.print(f"  {label:<8} {escape(str(value))}", highlight=False)
    console.print("  input:", highlight=False)
    console.print(escape(json.dumps(a.input, indent=2, sort_keys=True)), highlight=False)
    for h in detail.history:
        console.print(f"  {h.at:%H:%M:%S} {escape(h.actor)} {h.action}", highlight=False)


@approvals_app.command()
def approve(ctx: typer.Context, approval_id: int = typer.Argument(...),
            json_out: bool = JsonOpt) -> None:
    """Approve a pending request: its task runs again and makes the call, once."""
    s = settings(ctx)
    done = with_client(s, lambda c: c.approve(approval_id, by=decider_name("cli")))
    if json_out:
        emit_json(done)
    else:
        console.print(escape(_line(done)), highlight=False)


@approvals_app.command()
def deny(ctx: typer.Context, approval_id: int = typer.Argument(...),
         reason: str = typer.Option(..., "--reason", help="Why; the run is told."),
         json_out: bool = JsonOpt) -> None:
    """Deny a pending request: the call is refused and the run goes on with the reason."""
    s = settings(ctx)
    done = with_client(s, lambda c: c.deny(approval_id, reason, by=decider_name("cli")))
    if json_out:
        emit_json(done)
    else:
        console.print(escape(_line(done)), highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(approvals_app, name="approvals")
