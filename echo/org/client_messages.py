"""The client's messages: send, list, ask a role, read a role's inbox and overview.

A person sends as `operator` (or a role's name) to every role or one; input is
checked before anything is written, and a bad message raises a `UsageError` leaf.
"""

from __future__ import annotations

import anyio

from echo.bus import ALL, Kind, Message, MessageStore, StoredMessage
from echo.errors import EchoError, UsageError
from echo.org.agent import asks
from echo.org.client_base import ClientBase, NoAgentsUp
from echo.org.health import read_health_file
from echo.org.inputs import check_id
from echo.org.overview import RoleOverview, role_overview
from echo.org.roles import NON_AGENT_SENDERS, check_role, load_role
from echo.org.status import STALE_AFTER
from echo.org.views import Inbox, SendKind, Sent


class MessageOps(ClientBase):
    """What people send on the bus and read from it."""

    def message(self, subject: str, body: str | None = None, *, sender: str = "operator",
                to: str = ALL, kind: str = SendKind.BROADCAST) -> Message:
        """The message `broadcast` would send, fully validated (a `UsageError` leaf if not)."""
        s = self.settings
        check_role(sender, s.agents_dir, allow=NON_AGENT_SENDERS)
        check_role(to, s.agents_dir, allow=(ALL,))
        if kind not in set(SendKind):
            raise UsageError(f"kind {kind!s} is not one a person sends; use one of: "
                             f"{', '.join(SendKind)}")
        chosen = Kind(str(kind))
        return Message.build(
            from_role=sender, to_role=to, subject=subject,
            kind=chosen if to == ALL or chosen != Kind.BROADCAST else Kind.DIRECT,
            body={} if body is None else {"text": body}, max_body_bytes=s.max_body_bytes)

    async def broadcast(self, subject: str, body: str | None = None, *, sender: str = "operator",
                        to: str = ALL, kind: str = SendKind.BROADCAST) -> Sent:
        """Publish to every role (`to="all"`) or one role: stored, then announced.

        Returns once the announcement went out (or was left to the outbox relay), with
        the `db_id` and how many receivers Redis reached (NOTIFY cannot count: 0)."""
        message = self.message(subject, body, sender=sender, to=to, kind=kind)
        with self._migrated():
            result = await self._publish(message, confirm=True)
        receivers = None if result.transport == "notify" else result.receivers
        return Sent(db_id=result.db_id, channel=message.channel, receivers=receivers,
                    published=result.published, transport=result.transport)

    async def messages(self, *, role: str | None = None, after: int | None = None,
                       limit: int = 20) -> list[StoredMessage]:
        """Messages oldest first: those after id `after`, else the latest `limit`;
        with `role`, only what it sent or received (direct or broadcast)."""
        if role is not None:
            check_role(role, self.settings.agents_dir, allow=NON_AGENT_SENDERS)
        if after is not None:
            check_id(after, "since (a message id)", least=0)
        with self._migrated():
            return await MessageStore(await self.database()).list_messages(
                role=role, since=after, limit=limit)

    async def ask(self, role: str, question: str, *, within: float = 60.0,
                  sender: str = "operator") -> asks.Answered:
        """Ask `role` a question and wait up to `within` seconds for its agent's answer
        (its Claude's, or its fallback's, which says so): echo/org/agent/asks.py.

        Refused before anything is written: an unknown role, asking oneself, an empty
        question, a timeout outside 1-600 s, a role whose agent is not up."""
        s = self.settings
        check_role(sender, s.agents_dir, allow=NON_AGENT_SENDERS)
        check_role(role, s.agents_dir)
        message = asks.question(sender, role, question, within, max_body_bytes=s.max_body_bytes)
        with self._migrated():
            if role not in await self.live_roles():
                raise NoAgentsUp(f"{role} is not up to answer; start it (`echoctl up --detach`, "
                                 "then `echoctl status`) and ask again")
            published = await self._publish(message, confirm=True)
            store = MessageStore(await self.database())
            assert message.thread_id is not None
            with anyio.move_on_after(within):
                while True:
                    reply = await store.answer_on(message.thread_id)
                    if reply is not None:
                        return asks.answered(published.db_id, reply)
                    await anyio.sleep(0.2)
        raise EchoError(f"{role} did not answer within {within:g}s (question "
                        f"{published.db_id}); its answer, if it comes, is on thread "
                        f"{message.thread_id} (`echoctl messages --role {sender}`)")

    async def inbox(self, role: str) -> Inbox:
        """A role's cursor and its unread messages (what `agents/<role>/<role>` prints)."""
        from echo.bus import broadcast_channel, role_channel

        chosen = load_role(self.settings.agents_dir, role)
        with self._migrated():
            store = MessageStore(await self.database())
            cursor = await store.read_cursor(role)
            unread = await store.fetch_after(cursor, [broadcast_channel(), role_channel(role)],
                                             limit=50)
        health = read_health_file(self.settings, role, STALE_AFTER)
        return Inbox(role=role, title=chosen.title, state=health.state if health else "not running",
                     cursor=cursor, unread=list(unread))

    async def overview(self, role: str) -> RoleOverview:
        """What a role is up to: its state, unread and recent messages, running and
        pending tasks (what `echoctl agent ROLE` prints)."""
        chosen = load_role(self.settings.agents_dir, role)
        with self._migrated():
            return await role_overview(self.settings, await self.database(), chosen,
                                       stale_after=STALE_AFTER)

    async def latest_message_id(self) -> int:
        """The highest message id committed (0 for none): a cheap probe of the database."""
        with self._migrated():
            return await MessageStore(await self.database()).max_id()
