"""The notice: what Redis or NOTIFY carries for one committed message, and its encoding.

A plain notice is `db_id` plus the routing fields: only a wake-up call, the receiver
reads the row. The publisher also sends, on the namespace-wide feed, a *signed* notice:
the message itself, the id committed just before it (`prev`, see 007_bus_chain.sql) and
an HMAC of all of it under the namespace's key (`sig`). A receiver that verifies the
signature and finds `prev` equal to its cursor hands the message over without reading
the table. A notice whose signature does not verify is treated as a plain wake-up, so
whoever can PUBLISH on Redis without the key can at most make a receiver read Postgres.

`Notice` is a plain dataclass: what the wire may set is validated by pydantic on the way
in (`parse_notice`, which raises nothing but `InvalidMessage`), and `verified` and
`body_json` are never read from the wire. Encoding is written out field by field, since
a publisher encodes one notice per message.
"""

from __future__ import annotations

import hmac
import json
import json.encoder
import uuid as uuid_mod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Final

from pydantic import Field, TypeAdapter, ValidationError

from echo.bus.envelope import Message, StoredMessage, first_error
from echo.errors import InvalidMessage

#: Largest notification accepted from the wire (NOTIFY's own limit is 8000 bytes).
MAX_NOTICE_BYTES = 8000
#: A body up to this size (encoded) travels in its signed notice; a larger one is read
#: from the table, so that a notice always stays under `MAX_NOTICE_BYTES`.
MAX_CARRIED_BODY_BYTES = 6000
_SIG_HEX = 32  # 128 bits of HMAC-SHA256
_SIG_OPEN: Final = b',"sig":"'
_SIG_TAIL = len(_SIG_OPEN) + _SIG_HEX + 2  # ,"sig":"<hex>"}


class _NoBody:
    """The body of a notice that carries none (unlike a body that is JSON null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_BODY"


NO_BODY: Final[Any] = _NoBody()


@dataclass(slots=True)
class Notice:
    """The notification of one committed row.

    The routing fields are always there. A signed notice (`sig`) also has `prev` (the
    id committed just before this one), `uuid`, `created_at` and, unless the body is
    larger than `MAX_CARRIED_BODY_BYTES`, `body`. `verified` says the signature was
    checked against the namespace's key; `body_json` is the encoded body a publisher
    carries. Neither comes from the wire. Treat a notice as immutable.
    """

    db_id: Annotated[int, Field(gt=0)]
    channel: str
    kind: str
    from_role: str
    to_role: str
    thread_id: str | None = None
    subject: str = ""
    prev: Annotated[int | None, Field(ge=0)] = None
    uuid: uuid_mod.UUID | None = None
    created_at: datetime | None = None
    body: Any = NO_BODY
    sig: str | None = None
    verified: bool = False
    body_json: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, message: Message, db_id: int, *, prev: int | None = None,
           created_at: datetime | None = None) -> Notice:
        encoded = message.encoded_body
        return cls(db_id, message.channel, str(message.kind), message.from_role,
                   message.to_role, message.thread_id, message.subject, prev, message.uuid,
                   created_at,
                   body_json=encoded if len(encoded) <= MAX_CARRIED_BODY_BYTES else None)

    @classmethod
    def of_row(cls, row: Any) -> Notice:
        return cls(row["id"], row["channel"], row["kind"], row["from_role"], row["to_role"],
                   row["thread_id"], row["subject"])

    @property
    def carries_body(self) -> bool:
        return self.body is not NO_BODY

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
        if self.body_json is not None:  # compact JSON already: spliced in, not re-encoded
            text += f',"body":{self.body_json}'
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


#: What a notice off the wire may set: every field but `verified` and `body_json`.
_WIRE_FIELDS: frozenset[str] = frozenset(Notice.__dataclass_fields__) - {"verified", "body_json"}
_validate: Callable[[Any], Notice] = TypeAdapter(Notice).validate_python
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
        notice = _validate({k: v for k, v in decoded.items() if k in _WIRE_FIELDS})
    except InvalidMessage:
        raise
    except ValidationError as exc:
        raise InvalidMessage(first_error(exc).replace("message", "notification", 1)) from None
    except (ValueError, UnicodeError, RecursionError) as exc:
        raise InvalidMessage(f"notification is not valid JSON ({type(exc).__name__})") from None
    if key is not None and notice.sig is not None and notice.prev is not None and _verify(key, raw):
        notice.verified = True
    return notice
