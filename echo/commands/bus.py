"""`echoctl broadcast`, `echoctl messages` and `echoctl ask`: the bus from the command line.

Input is validated completely (roles, kind, subject, body size) before the
database is touched, so a usage error (exit 2) never leaves anything behind. The
schema is not migrated on the fly: a broadcast into an unmigrated namespace stops
with "run `echoctl db migrate`", because changing a shared production schema
should be one deliberate step, not a side effect of sending a message.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from echo.bus import ALL
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
from echo.errors import InvalidMessage, UsageError
from echo.org.views import SendKind, Sent


def _read_body(body: str | None, body_file: Path | None, max_bytes: int) -> str | None:
    if body is not None and body_file is not None:
        raise UsageError("give --body or --body-file, not both")
    if body_file is None:
        return body
    try:
        size = body_file.stat().st_size
        if size > max_bytes:
            raise InvalidMessage(
                f"invalid message: {body_file} is {size} bytes, more than "
                f"max_body_bytes={max_bytes}"
            )
        return body_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read --body-file {body_file}: {exc}") from None


def _reach(result: Sent) -> str:
    if result.transport == "notify":
        return "announced over Postgres NOTIFY (no Redis configured; NOTIFY cannot count receivers)"
    if not result.published:
        return ("Redis is unavailable: 0 subscribers reached now; the message is stored and "
                "the outbox relay will announce it")
    return f"Redis reached {result.receivers} subscriber(s)"


_SUBJECT = typer.Argument(..., help="What the message is about (one line).")
_BODY = typer.Option(None, "--body", help="Message text.")
_BODY_FILE = typer.Option(None, "--body-file", help="Read the text from a file.")
_FROM = typer.Option("operator", "--from", help="Sending role (default: operator).")
_TO = typer.Option(ALL, "--to", help="'all' or a role.")
_KIND = typer.Option(SendKind.BROADCAST, "--kind", help="Message kind.")
_ROLE = typer.Option(None, "--role", help="Only what this role sent or got.")
_SINCE = typer.Option(None, "--since", min=0, help="Only ids after this one.")
_LIMIT = typer.Option(20, "--limit", min=1, max=10_000, help="At most this many.")


def broadcast(
    ctx: typer.Context,
    subject: str = _SUBJECT,
    body: str | None = _BODY,
    body_file: Path | None = _BODY_FILE,
    sender: str = _FROM,
    to: str = _TO,
    kind: SendKind = _KIND,
    json_out: bool = JsonOpt,
) -> None:
    """Publish a message to every role (or one): stored in Postgres, then announced."""
    s = settings(ctx)
    text = _read_body(body, body_file, s.max_body_bytes)

    result = with_client(s, lambda c: c.broadcast(subject, text, sender=sender, to=to, kind=kind))
    if json_out:
        emit_json(result)
    else:
        console.print(f"message {result.db_id} stored on {result.channel}; {_reach(result)}")


def messages(
    ctx: typer.Context,
    role: str | None = _ROLE,
    since: int | None = _SINCE,
    limit: int = _LIMIT,
    json_out: bool = JsonOpt,
) -> None:
    """List messages: the latest ones, or those after --since, oldest first."""
    s = settings(ctx)
    found = with_client(s, lambda c: c.messages(role=role, after=since, limit=limit))
    if json_out:
        emit_json([m.model_dump(mode="json") for m in found])
        return
    if not found:
        console.print("no messages")
        return
    table = plain_table("id", "at")
    role_column(table, "from", (m.from_role for m in found))
    role_column(table, "to", (m.to_role for m in found))
    table.add_column("kind")
    table.add_column("subject")
    table.add_column("published")
    for m in found:
        table.add_row(
            str(m.id), m.created_at.strftime("%Y-%m-%d %H:%M:%S"), m.from_role, m.to_role,
            str(m.kind), escape(clip(m.subject, 200)), "yes" if m.published_at else "pending",
        )
    console.print(table)


def ask(
    ctx: typer.Context,
    role: str = typer.Argument(..., help="The role to ask."),
    question: str = typer.Argument(..., help="What you want to know."),
    within: float = typer.Option(60.0, "--timeout", help="Seconds to wait for the answer (1-600)."),
    json_out: bool = JsonOpt,
) -> None:
    """Ask one role a question and print its agent's answer (its Claude's, or its fallback's)."""
    s = settings(ctx)
    if json_out:
        emit_json(with_client(s, lambda c: c.ask(role, question, within=within)))
        return
    with console.status(f"waiting for {role}'s answer (at most {within:g}s)"):
        result = with_client(s, lambda c: c.ask(role, question, within=within))
    source = "" if result.source == "llm" else f" [fallback: {escape(result.fallback_reason or '')}]"
    console.print(f"{escape(result.role)} (message {result.answer_id}){source}:")
    console.print(escape(result.answer), soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("broadcast")(broadcast)
    app.command("messages")(messages)
    app.command("ask")(ask)
