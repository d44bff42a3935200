"""Where an agent's messages land: each handled once per role, its handling committed
with its inbox row.

The agent's tree (echo/org/agent/tree.py) starts the participant before the subscriber that
delivers to it; what "handled once" means across a SIGKILL at any instant is the
class's docstring, which the chaos checkers (tests/chaos/conftest.py) hold it to.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from echo import db
from echo.bus import Kind, StoredMessage
from echo.bus.store import record_inbox
from echo.errors import StoreUnavailable
from echo.logs import fields
from echo.runtime import Actor, Registry

#: The agent's logger, as it was before the participant had a module of its own: the
#: `processed` line is the record people and the log checkers read.
log = logging.getLogger("echo.org.agent")

#: How a participant waits out a database that cannot record a message.

#: The handling's database effects: run on the connection whose transaction records
#: the message, so they commit with its inbox row or not at all.
Handle = Callable[[Any, StoredMessage], Awaitable[None]]

class Participant(Actor):
    """Handles each message once per role: its inbox row and its handling commit together.

    What handling a message is: (1) `handle`'s database writes, if any (none in a
    plain agent today); (2) the line `<role> processed message <id> from ...`, the
    record a person and the chaos checkers read; (3) a kick of the workflow loop when
    the message belongs to a workflow (its body names one), so the role does its part
    now rather than at its next tick. All three happen INSIDE the transaction that
    inserts the `agent_inbox` row, before its commit; the row carries the attempt's
    id, and so does the line (`attempt=...`).

    What that guarantees, across SIGKILL at any instant (issue 19, fault 1: the row
    used to commit first, and an agent killed before logging left a message recorded
    but never handled, which its successor skipped as a redelivery):

    - the database writes of the handling happen exactly once per (role, message):
      they commit with the row, and a redelivery of a committed row is skipped;
    - a committed row always has its line, written by the attempt it names, because
      the line was written before the commit. An attempt that dies (or whose commit
      fails) before committing has written a line too, and the next attempt writes
      another; those are attempts that rolled back, not processings, so a reader of
      the log counts a processing only for the line whose attempt is the row's
      (`tests/chaos/conftest.py` does);
    - the kick is idempotent (the workflow loop re-reads every open workflow, and does
      its missing part only), so repeating it with a retried attempt is harmless.

    A database outage while recording is waited out with capped backoff rather than
    crashing; the message was already read and the next attempt handles it again.
    """

    def __init__(self, database: db.Database, role: str, registry: Registry,
                 on_workflow: Callable[[], None] | None = None,
                 handle: Handle | None = None,
                 on_question: Callable[[], None] | None = None) -> None:
        super().__init__(name=f"{role}.participant")
        self.db = database
        self.role = role
        self.registry = registry
        self.on_workflow = on_workflow
        self.on_question = on_question
        self.handle = handle
        self.processed = 0
        self.redelivered = 0
        self.last_message_id = 0

    async def init(self) -> None:
        self.registry.register("participant", self)

    async def handle_call(self, request: Any) -> Any:
        kind, message = request
        if kind != "message":
            raise ValueError(f"participant got an unknown request {kind!r}")
        return await self._process(message)

    async def _process(self, message: StoredMessage) -> bool:
        retry = db.DB_BACKOFF.attempts()
        while True:
            attempt = secrets.token_hex(6)
            try:
                async with self.db.transaction() as conn:
                    fresh = await record_inbox(conn, self.role, message.id, attempt)
                    if fresh:
                        await self._handle(conn, message, attempt)
                break
            except StoreUnavailable as exc:
                log.warning("cannot record message %s (%s); retrying", message.id, exc)
                await anyio.sleep(retry.next_delay())
        self.last_message_id = max(self.last_message_id, message.id)
        if not fresh:
            self.redelivered += 1
            return False
        self.processed += 1
        return True

    async def _handle(self, conn: Any, message: StoredMessage, attempt: str) -> None:
        """The handling, inside the recording transaction (see the class docstring)."""
        if self.handle is not None:
            await self.handle(conn, message)
        log.info("%s processed message %s from %s: %s", self.role, message.id, message.from_role,
                 message.subject, extra=fields(attempt=attempt))
        if self.on_workflow is not None and isinstance(message.body, dict) and "workflow" in message.body:
            self.on_workflow()
        if self.on_question is not None and message.kind == Kind.QUESTION and message.to_role == self.role:
            self.on_question()
