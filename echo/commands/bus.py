"""`echoctl broadcast` and `echoctl messages`: the bus from the command line.

Input is validated completely (roles, subject, body size) before the database
is touched, so a usage error (exit 2) never leaves anything behind. The schema
is not migrated on the fly: a broadcast into an unmigrated namespace stops with
"run `echoctl db migrate`", because changing a shared production schema should
be one deliberate step, not a side effect of sending a message.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from echo.bus.envelope import ALL, NON_AGENT_SENDERS, Kind, Message, StoredMessage, check_role
from echo.bus.publisher import Published, Publisher
from echo.bus.store import MessageStore
from echo.commands._common import JsonOpt, console, emit_json, run, settings
from echo.config import Settings
from echo.db import Database
from echo.errors import InvalidMessage, UsageError


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


def build_broadcast(
    s: Settings, subject: str, body: str | None, sender: str, to: str, kind: Kind
) -> Message:
    """The message a broadcast sends, fully validated (raises a `UsageError` leaf)."""
    check_role(sender, s.agents_dir, allow=NON_AGENT_SENDERS)
    check_role(to, s.agents_dir, allow=(ALL,))
    return Message.build(
        from_role=sender, to_role=to, subject=subject,
        kind=kind if to == ALL or kind != Kind.BROADCAST else Kind.DIRECT,
        body={} if body is None else {"text": body},
        max_body_bytes=s.max_body_bytes,
    )


def _reach(result: Published) -> str:
    if result.transport == "notify":
        return ("delivered over Postgres NOTIFY (no Redis configured; NOTIFY does not "
                "count receivers, so 0)")
    if not result.published:
        return ("Redis is unavailable: 0 subscribers reached now; the message is stored and "
                "the outbox relay will announce it")
    return f"Redis reached {result.receivers} subscriber(s)"


_SUBJECT = typer.Argument(..., help="What the message is about (one line).")
_BODY = typer.Option(None, "--body", help="Message text.")
_BODY_FILE = typer.Option(None, "--body-file", help="Read the text from a file.")
_FROM = typer.Option("operator", "--from", help="Sending role (default: operator).")
_TO = typer.Option(ALL, "--to", help="'all' or a role.")
_KIND = typer.Option(Kind.BROADCAST, "--kind", help="Message kind.")
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
    kind: Kind = _KIND,
    json_out: bool = JsonOpt,
) -> None:
    """Publish a message to every role (or one): stored in Postgres, then announced."""
    s = settings(ctx)
    text = _read_body(body, body_file, s.max_body_bytes)
    message = build_broadcast(s, subject, text, sender, to, kind)

    async def send() -> Published:
        database = await Database.open(s, max_size=1)
        try:
            async with Publisher(database) as pub:
                return await pub.publish(message, confirm=True)
        finally:
            await database.close()

    result = run(send)
    if json_out:
        emit_json({
            "db_id": result.db_id, "channel": message.channel, "receivers": result.receivers,
            "published": result.published, "transport": result.transport,
        })
    else:
        console.print(f"message {result.db_id} stored on {message.channel}; {_reach(result)}")


def messages(
    ctx: typer.Context,
    role: str | None = _ROLE,
    since: int | None = _SINCE,
    limit: int = _LIMIT,
    json_out: bool = JsonOpt,
) -> None:
    """List messages: the latest ones, or those after --since, oldest first."""
    s = settings(ctx)
    if role is not None:
        check_role(role, s.agents_dir, allow=NON_AGENT_SENDERS)

    async def fetch() -> list[StoredMessage]:
        database = await Database.open(s, max_size=1)
        try:
            return await MessageStore(database).list_messages(role=role, since=since, limit=limit)
        finally:
            await database.close()

    found = run(fetch)
    if json_out:
        emit_json([m.model_dump(mode="json") for m in found])
        return
    if not found:
        console.print("no messages")
        return
    table = Table("id", "at", "from → to", "kind", "subject", "published")
    for m in found:
        table.add_row(
            str(m.id), m.created_at.strftime("%Y-%m-%d %H:%M:%S"), f"{m.from_role} → {m.to_role}",
            str(m.kind), m.subject, "yes" if m.published_at else "pending",
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("broadcast")(broadcast)
    app.command("messages")(messages)
