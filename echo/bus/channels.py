"""Channel names: where a message is announced, logically and on the wire.

The logical channels are `messages:all` (broadcast), `messages:<role>` (direct),
`decisions:<id>`, `workflow:<id>` and `health`. On the wire every channel is prefixed
with the namespace, so two organisations can share one Redis: `messages:all` in
namespace `echo` is published as `echo:messages:all` (the same string
`echo.listener.notify_channel` gives for NOTIFY).
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


def wire_channel(namespace: str, channel: str) -> str:
    """The Redis channel of a logical channel: `<namespace>:<channel>`."""
    return f"{namespace}:{channel}"
