"""The message envelope and the role-name rule.

Which roles exist is the organisation's business: echo.org.roles; channel names are
echo.bus.channels.

A `Message` is what a sender builds; `StoredMessage` is the committed row, with
its `id` (the `db_id` everywhere else). Validation happens here, before anything
touches the database, so a bad message is one clear `InvalidMessage` and never
a half-written row or a driver error:

- role names are identifiers (`^[a-z][a-z0-9_]{0,63}$`), or `all` as a recipient;
- the subject is non-empty and at most `MAX_SUBJECT_CHARS`;
- the body is JSON (no NaN) and at most `max_body_bytes` once encoded;
- no text contains NUL, which Postgres refuses in both `text` and `jsonb`.

Channel names live in `echo.bus.channels`; the notice that announces a stored
message, and its signed encoding, in `echo.bus.wire`.
"""

from __future__ import annotations

import contextlib
import json
import json.encoder
import uuid as uuid_mod
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from echo.bus.channels import ALL as ALL  # re-exported: older imports name envelope
from echo.bus.channels import ROLE_RE as ROLE_RE
from echo.bus.channels import TOPIC_ID_RE, role_channel, valid_channel
from echo.db import nul_free
from echo.errors import InvalidMessage

#: The one rule for a role's name, and its one message (echo.org.roles uses both).
ROLE_RULE: Final = "a role name is lowercase letters, digits and _, starting with a letter"

MAX_SUBJECT_CHARS = 200
#: A ceiling for any organisation; the publisher enforces `settings.max_body_bytes`.
HARD_MAX_BODY_BYTES = 16 * 1024 * 1024


class Kind(StrEnum):
    """What a message is for. Receivers route on it; add a member for a new use."""

    BROADCAST = "broadcast"
    DIRECT = "direct"
    DISCUSSION = "discussion"
    PROPOSAL = "proposal"
    VOTE = "vote"
    DECISION = "decision"
    TASK = "task"
    STATUS = "status"
    QUESTION = "question"  # `ask`: a direct question its receiver answers (echo/org/agent/asks.py)
    ANSWER = "answer"  # the answer, on the question's thread
    HEALTH = "health"
    SYSTEM = "system"


# ---------------------------------------------------------------- roles


# ---------------------------------------------------------------- the envelope


def _no_nul(value: Any, where: str) -> None:
    if not nul_free(value):
        raise ValueError(f"{where} contains a NUL character, which Postgres cannot store")


def first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    msg = str(first["msg"]).removeprefix("Value error, ")
    field = ".".join(str(p) for p in first["loc"])
    return f"invalid message: {field}: {msg}" if field else f"invalid message: {msg}"


class Message(BaseModel):
    """A message to publish. Build it with `Message.build(...)` to get `InvalidMessage`
    (a usage error with one clear line) instead of pydantic's `ValidationError`.

    `channel` defaults from `to_role` (`messages:all` or `messages:<role>`); set it
    for the topic channels (`decisions:<id>`, `workflow:<id>`, `health`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    uuid: uuid_mod.UUID = Field(default_factory=uuid_mod.uuid4)
    channel: str = ""
    kind: Kind = Kind.BROADCAST
    from_role: str
    to_role: str = ALL
    thread_id: str | None = None
    subject: str
    body: Any = Field(default_factory=dict)
    _encoded_body: str | None = PrivateAttr(None)

    @field_validator("from_role")
    @classmethod
    def _sender(cls, value: str) -> str:
        if not ROLE_RE.match(value):
            raise ValueError(ROLE_RULE)
        return value

    @field_validator("to_role")
    @classmethod
    def _recipient(cls, value: str) -> str:
        if value != ALL and not ROLE_RE.match(value):
            raise ValueError(f"use 'all' or a role: {ROLE_RULE}")
        return value

    @field_validator("thread_id")
    @classmethod
    def _thread(cls, value: str | None) -> str | None:
        if value is not None and not TOPIC_ID_RE.match(value):
            raise ValueError("a thread id is 1-64 letters, digits, '_', '.' or '-'")
        return value

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("the subject is empty")
        if len(value) > MAX_SUBJECT_CHARS:
            raise ValueError(f"the subject is longer than {MAX_SUBJECT_CHARS} characters")
        _no_nul(value, "the subject")
        return value

    @model_validator(mode="after")
    def _route_and_body(self) -> Message:
        if not self.channel:
            object.__setattr__(self, "channel", role_channel(self.to_role))
        elif not valid_channel(self.channel):
            raise ValueError(
                f"unknown channel {self.channel!r}; use messages:all, messages:<role>, "
                "decisions:<id>, workflow:<id> or health"
            )
        elif self.channel.startswith("messages:") and self.channel != role_channel(self.to_role):
            raise ValueError(f"channel {self.channel} does not match to_role {self.to_role!r}")
        _no_nul(self.body, "the body")
        try:
            encoded = json.dumps(self.body, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the body is not JSON-serialisable ({exc})") from None
        if len(encoded) > HARD_MAX_BODY_BYTES:  # characters <= bytes: a cheap first check
            raise ValueError(f"the body is larger than {HARD_MAX_BODY_BYTES} bytes")
        self._encoded_body = encoded
        return self

    @classmethod
    def build(cls, *, max_body_bytes: int | None = None, **fields: Any) -> Message:
        """Validate `fields` into a message, or raise `InvalidMessage` naming the problem.
        Pass `settings.max_body_bytes` to check the size now rather than at publish."""
        try:
            message = cls(**fields)
        except ValidationError as exc:
            raise InvalidMessage(first_error(exc)) from None
        except RecursionError:  # a body nested deeper than the interpreter can walk
            raise InvalidMessage("invalid message: body: the body is nested too deeply") from None
        if max_body_bytes is not None:
            message.check_size(max_body_bytes)
        return message

    @property
    def encoded_body(self) -> str:
        """The body as compact JSON text, encoded once (it is what the database stores)."""
        # Straight from pydantic's private store: `self._encoded_body` goes through
        # BaseModel.__getattr__, which costs more than the rest of a publish's bookkeeping.
        private = self.__pydantic_private__
        assert private is not None
        encoded: str | None = private["_encoded_body"]
        if encoded is None:
            encoded = private["_encoded_body"] = json.dumps(
                self.body, allow_nan=False, separators=(",", ":"))
        return encoded

    def check_size(self, max_body_bytes: int) -> None:
        """`InvalidMessage` if the body exceeds this organisation's `max_body_bytes`."""
        size = len(self.encoded_body.encode())
        if size > max_body_bytes:
            raise InvalidMessage(
                f"invalid message: body is {size} bytes, more than max_body_bytes={max_body_bytes}"
            )


class StoredMessage(Message):
    """A committed message: what subscribers and `echoctl messages` see."""

    id: int
    created_at: datetime
    published_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> StoredMessage:
        """From a database row, without re-validating what the database already holds.

        What `model_construct` does for a row that has every field, without its generic
        bookkeeping (a third of a subscriber's Python time per message)."""
        fields = {name: row[name] for name in _STORED_FIELDS}
        kind = fields["kind"]
        with contextlib.suppress(ValueError):  # a kind this version does not know stays text
            fields["kind"] = _KINDS.get(kind) or Kind(kind)
        message = cls.__new__(cls)
        object.__setattr__(message, "__dict__", fields)
        object.__setattr__(message, "__pydantic_fields_set__", set(_STORED_FIELDS))
        object.__setattr__(message, "__pydantic_extra__", None)
        object.__setattr__(message, "__pydantic_private__", {"_encoded_body": None})
        return message


_STORED_FIELDS: tuple[str, ...] = tuple(StoredMessage.model_fields)
_KINDS: dict[str, Kind] = {k.value: k for k in Kind}
