"""The message envelope, the notification payload, channel names and role names.

A `Message` is what a sender builds; `StoredMessage` is the committed row, with
its `id` (the `db_id` everywhere else). Validation happens here, before anything
touches the database, so a bad message is one clear `InvalidMessage` and never
a half-written row or a driver error:

- role names are identifiers (`^[a-z][a-z0-9_]{0,63}$`), or `all` as a recipient;
- the subject is non-empty and at most `MAX_SUBJECT_CHARS`;
- the body is JSON (no NaN) and at most `max_body_bytes` once encoded;
- no text contains NUL, which Postgres refuses in both `text` and `jsonb`.

Channels. The logical channels are `messages:all`, `messages:<role>`,
`decisions:<id>`, `workflow:<id>` and `health`. On the wire every channel is
prefixed with the namespace, so two organisations can share one Redis:
`messages:all` in namespace `echo` is published as `echo:messages:all` (the same
string `echo.listener.notify_channel` gives for NOTIFY).

The payload that Redis or NOTIFY carries is a `Notice`: `db_id` plus the routing
fields. A plain notice is only a wake-up call: the receiver reads the row. The
publisher also sends, on the namespace-wide feed, the message itself, the id committed just before it
(`prev`, see 007_bus_chain.sql) and an HMAC of all of it under the namespace's key
(`sig`); a receiver that verifies the signature and finds `prev` equal to its
cursor hands the message over without reading the table. A notice whose signature
does not verify is treated as a plain wake-up, so whoever can PUBLISH on Redis
without the key can at most make a receiver read Postgres. `parse_notice` raises
nothing but `InvalidMessage`.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import json.encoder
import re
import uuid as uuid_mod
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
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

from echo.db import nul_free
from echo.errors import InvalidMessage, UnknownRole

ROLE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TOPIC_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

#: The roles an organisation has before agents/<role>/role.toml exist. The one list.
DEFAULT_ROLES: tuple[str, ...] = (
    "ceo", "cto", "chro", "product_manager", "senior_architect", "operations_head",
)
#: The recipient meaning "every role".
ALL = "all"
#: Senders that are not agents: a person at `echoctl`, and ECHO itself.
NON_AGENT_SENDERS: tuple[str, ...] = ("operator", "system")

MAX_SUBJECT_CHARS = 200
#: A ceiling for any organisation; the publisher enforces `settings.max_body_bytes`.
HARD_MAX_BODY_BYTES = 16 * 1024 * 1024
#: Largest notification accepted from the wire (NOTIFY's own limit is 8000 bytes).
MAX_NOTICE_BYTES = 8000
#: A body up to this size (encoded) travels in its signed notice; a larger one is read
#: from the table, so that a notice always stays under `MAX_NOTICE_BYTES`.
MAX_CARRIED_BODY_BYTES = 6000
_SIG_HEX = 32  # 128 bits of HMAC-SHA256
_SIG_OPEN: Final = b',"sig":"'
_SIG_TAIL = len(_SIG_OPEN) + _SIG_HEX + 2  # ,"sig":"<hex>"}


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
    HEALTH = "health"
    SYSTEM = "system"


# ---------------------------------------------------------------- channels and roles


def broadcast_channel() -> str:
    return "messages:all"


def role_channel(role: str) -> str:
    return f"messages:{role}"


def decision_channel(decision_id: str | int) -> str:
    return f"decisions:{decision_id}"


def workflow_channel(workflow_id: str | int) -> str:
    return f"workflow:{workflow_id}"


HEALTH_CHANNEL = "health"


def valid_channel(channel: str) -> bool:
    """Whether `channel` is one of the logical channel forms above."""
    if channel == HEALTH_CHANNEL:
        return True
    prefix, sep, rest = channel.partition(":")
    if not sep:
        return False
    if prefix == "messages":
        return rest == ALL or bool(ROLE_RE.match(rest))
    return prefix in ("decisions", "workflow") and bool(_TOPIC_ID_RE.match(rest))


def wire_channel(namespace: str, channel: str) -> str:
    """The Redis channel of a logical channel: `<namespace>:<channel>`."""
    return f"{namespace}:{channel}"


def known_roles(agents_dir: Path) -> list[str]:
    """The organisation's roles: folders under agents/ with a role.toml, else the defaults."""
    if agents_dir.is_dir():
        found = sorted(p.name for p in agents_dir.iterdir() if (p / "role.toml").is_file())
        if found:
            return found
    return list(DEFAULT_ROLES)


def check_role(name: str, agents_dir: Path, *, allow: tuple[str, ...] = ()) -> str:
    """`name` if it is a known role (or one of `allow`), else `UnknownRole`."""
    roles = known_roles(agents_dir)
    if name in roles or name in allow:
        return name
    choices = ", ".join([*roles, *allow])
    raise UnknownRole(f"unknown role {name!r}; use one of: {choices}")


# ---------------------------------------------------------------- the envelope


def _no_nul(value: Any, where: str) -> None:
    if not nul_free(value):
        raise ValueError(f"{where} contains a NUL character, which Postgres cannot store")


def _first_error(exc: ValidationError) -> str:
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
            raise ValueError("a role is lowercase letters, digits and _, starting with a letter")
        return value

    @field_validator("to_role")
    @classmethod
    def _recipient(cls, value: str) -> str:
        if value != ALL and not ROLE_RE.match(value):
            raise ValueError("use 'all' or a role: lowercase letters, digits and _")
        return value

    @field_validator("thread_id")
    @classmethod
    def _thread(cls, value: str | None) -> str | None:
        if value is not None and not _TOPIC_ID_RE.match(value):
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
            raise InvalidMessage(_first_error(exc)) from None
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


# ---------------------------------------------------------------- the wire payload


class Notice(BaseModel):
    """The notification of one committed row.

    The routing fields are always there. A signed notice (`sig`) also has `prev` (the
    id committed just before this one), `uuid`, `created_at` and, unless the body is
    larger than `MAX_CARRIED_BODY_BYTES`, `body`; `verified` says the signature was
    checked against the namespace's key.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    db_id: int = Field(gt=0)
    channel: str
    kind: str
    from_role: str
    to_role: str
    thread_id: str | None = None
    subject: str = ""
    prev: int | None = Field(None, ge=0)
    uuid: uuid_mod.UUID | None = None
    created_at: datetime | None = None
    body: Any = None
    sig: str | None = None
    # Private: never read from the wire. `parse_notice` sets `_verified` when `sig` held;
    # `_body_json` is the encoded body a publisher carries.
    _verified: bool = PrivateAttr(False)
    _body_json: str | None = PrivateAttr(None)

    @classmethod
    def of(cls, message: Message, db_id: int, *, prev: int | None = None,
           created_at: datetime | None = None) -> Notice:
        encoded = message.encoded_body
        return cls._trusted(
            {"db_id": db_id, "channel": message.channel, "kind": str(message.kind),
             "from_role": message.from_role, "to_role": message.to_role,
             "thread_id": message.thread_id, "subject": message.subject, "prev": prev,
             "uuid": message.uuid, "created_at": created_at, "body": None, "sig": None},
            encoded if len(encoded) <= MAX_CARRIED_BODY_BYTES else None,
        )

    @classmethod
    def of_row(cls, row: Any) -> Notice:
        return cls._trusted(
            {"db_id": row["id"], "channel": row["channel"], "kind": row["kind"],
             "from_role": row["from_role"], "to_role": row["to_role"],
             "thread_id": row["thread_id"], "subject": row["subject"], "prev": None,
             "uuid": None, "created_at": None, "body": None, "sig": None},
            None,
        )

    @classmethod
    def _trusted(cls, fields: dict[str, Any], body_json: str | None) -> Notice:
        """A notice of values this process produced: what `model_construct` does,
        without its generic bookkeeping (a publisher makes one per message)."""
        notice = cls.__new__(cls)
        object.__setattr__(notice, "__dict__", fields)
        object.__setattr__(notice, "__pydantic_fields_set__", set(_NOTICE_BUILT_FIELDS))
        object.__setattr__(notice, "__pydantic_extra__", None)
        object.__setattr__(notice, "__pydantic_private__",
                           {"_verified": False, "_body_json": body_json})
        return notice

    @property
    def verified(self) -> bool:
        private = self.__pydantic_private__
        return bool(private and private["_verified"])

    @property
    def carries_body(self) -> bool:
        return "body" in self.model_fields_set

    def encode(self, key: bytes | None = None) -> str:
        """The wire form: plain, or signed with `key` when this notice has a `prev`."""
        # Written out field by field (strings escaped by json's C encoder): a publisher
        # encodes one per message, and json.dumps of a dict costs several times more.
        thread = "null" if self.thread_id is None else _js(self.thread_id)
        text = (f'{{"db_id":{int(self.db_id)},"channel":{_js(self.channel)},'
                f'"kind":{_js(self.kind)},"from_role":{_js(self.from_role)},'
                f'"to_role":{_js(self.to_role)},"thread_id":{thread},'
                f'"subject":{_js(self.subject)}')
        if key is None or self.prev is None or self.uuid is None or self.created_at is None:
            return text + "}"
        text += (f',"prev":{int(self.prev)},"uuid":"{self.uuid}",'
                 f'"created_at":"{self.created_at.isoformat()}"')
        private = self.__pydantic_private__  # not `self._body_json`: see Message.encoded_body
        body_json = private["_body_json"] if private else None
        if body_json is not None:  # compact JSON already: spliced in, not re-encoded
            text += f',"body":{body_json}'
        return f'{text},"sig":"{_sign(key, (text + "}").encode())}"}}'

    def stored(self) -> StoredMessage:
        """The message this verified notice carries, as the table would return it."""
        if not (self.verified and self.carries_body):
            raise ValueError("only a verified notice that carries its body is a message")
        return StoredMessage.from_row({
            "id": self.db_id, "uuid": self.uuid, "channel": self.channel, "kind": self.kind,
            "from_role": self.from_role, "to_role": self.to_role, "thread_id": self.thread_id,
            "subject": self.subject, "body": self.body, "created_at": self.created_at,
            "published_at": None,
        })


#: Fields a locally built notice counts as set: all but `body`, which only a notice
#: off the wire has (see `carries_body`).
_NOTICE_BUILT_FIELDS: frozenset[str] = frozenset(Notice.model_fields) - {"body"}


_js: Callable[[str], str] = json.encoder.encode_basestring_ascii


def _sign(key: bytes, text: bytes) -> str:
    return hmac.digest(key, text, "sha256").hex()[:_SIG_HEX]


def _verify(key: bytes, data: bytes) -> bool:
    """Whether `data` ends in a signature of everything before it, made with `key`."""
    if len(data) <= _SIG_TAIL or data[-_SIG_TAIL:-_SIG_TAIL + len(_SIG_OPEN)] != _SIG_OPEN:
        return False
    if not data.endswith(b'"}'):
        return False
    signed = data[:-_SIG_TAIL] + b"}"
    return hmac.compare_digest(_sign(key, signed).encode(), data[-_SIG_HEX - 2:-2])


def parse_notice(data: bytes | str, key: bytes | None = None) -> Notice:
    """A `Notice` from the wire. Anything wrong (size, encoding, JSON, fields) is
    `InvalidMessage`: a receiver logs it, counts it and carries on. With `key`, a
    signed notice is checked, and `verified` says whether it held."""
    try:
        raw = data if isinstance(data, bytes) else data.encode()
        if len(raw) > MAX_NOTICE_BYTES:
            raise InvalidMessage(f"notification of {len(raw)} bytes is larger than {MAX_NOTICE_BYTES}")
        decoded = json.loads(raw)
        if not isinstance(decoded, dict):
            raise InvalidMessage("notification is not a JSON object")
        notice = Notice.model_validate(decoded)
    except InvalidMessage:
        raise
    except ValidationError as exc:
        raise InvalidMessage(_first_error(exc).replace("message", "notification", 1)) from None
    except (ValueError, UnicodeError, RecursionError) as exc:
        raise InvalidMessage(f"notification is not valid JSON ({type(exc).__name__})") from None
    if key is not None and notice.sig is not None and notice.prev is not None and _verify(key, raw):
        notice._verified = True
    return notice
