"""Channel names: where a message is announced, logically and on the wire.

The logical channels are `messages:all` (broadcast), `messages:<role>` (direct),
`decisions:<id>`, `workflow:<id>` and `health`.

On Redis every channel is prefixed with the namespace and the organisation's id
(a random id drawn once per namespace by 015_delivery.sql and kept in its
database): `messages:all` of namespace `echo` is published as
`echo:3f9c0a1be27d4c55:messages:all`. The namespace alone is not enough, because
Redis pub/sub ignores the database number in the URL: two organisations with the
same namespace on one Redis server (two Postgres databases) would hear each other's
broadcasts and count each other's subscribers. The id makes every organisation's
channels its own. NOTIFY needs no id: its channels belong to one Postgres database
(`echo.listener.notify_channel` gives `<namespace>:<channel>`).
"""

from __future__ import annotations

import re

#: A role name: an identifier, lowercase. The one rule, used for senders and recipients.
ROLE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: A decision, workflow or thread id.
TOPIC_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

#: The recipient meaning "every role".
ALL = "all"
HEALTH_CHANNEL = "health"


def broadcast_channel() -> str:
    return "messages:all"


def role_channel(role: str) -> str:
    return f"messages:{role}"


def decision_channel(decision_id: str | int) -> str:
    return f"decisions:{decision_id}"


def workflow_channel(workflow_id: str | int) -> str:
    return f"workflow:{workflow_id}"


def valid_channel(channel: str) -> bool:
    """Whether `channel` is one of the logical channel forms above."""
    if channel == HEALTH_CHANNEL:
        return True
    prefix, sep, rest = channel.partition(":")
    if not sep:
        return False
    if prefix == "messages":
        return rest == ALL or bool(ROLE_RE.match(rest))
    return prefix in ("decisions", "workflow") and bool(TOPIC_ID_RE.match(rest))


def wire_channel(namespace: str, organisation: str, channel: str) -> str:
    """The Redis channel of a logical channel: `<namespace>:<organisation>:<channel>`
    (with `channel` empty, the prefix of all of them)."""
    return f"{namespace}:{organisation}:{channel}"
