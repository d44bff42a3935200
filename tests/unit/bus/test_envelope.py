"""The envelope: validation, channel names, and payloads that never crash a receiver."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echo.bus import (
    MAX_NOTICE_BYTES,
    Kind,
    Message,
    Notice,
    decision_channel,
    parse_notice,
    valid_channel,
    wire_channel,
    workflow_channel,
)
from echo.bus.envelope import MAX_SUBJECT_CHARS
from echo.errors import InvalidMessage, UsageError


def test_defaults_route_by_recipient() -> None:
    m = Message.build(from_role="cto", subject="  Plan  ")
    expected = ("messages:all", "all", Kind.BROADCAST, "Plan")
    assert (m.channel, m.to_role, m.kind, m.subject) == expected
    direct = Message.build(from_role="cto", to_role="ceo", subject="x", kind="direct")
    assert direct.channel == "messages:ceo"
    topic = Message.build(from_role="ceo", subject="x", channel=decision_channel(42))
    assert topic.channel == "decisions:42"
    assert wire_channel("echo", "3f9c0a1be27d4c55", "messages:all") == "echo:3f9c0a1be27d4c55:messages:all"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"from_role": "CTO"}, "from_role"),
        ({"from_role": "1cto"}, "from_role"),
        ({"to_role": "Everyone"}, "to_role"),
        ({"subject": "   "}, "subject is empty"),
        ({"subject": "x" * (MAX_SUBJECT_CHARS + 1)}, "longer than"),
        ({"subject": "a\x00b"}, "NUL"),
        ({"body": {"k\x00": 1}}, "NUL"),
        ({"body": ["ok", {"deep": "nul\x00"}]}, "NUL"),
        ({"body": {"x": float("nan")}}, "JSON"),
        ({"body": {"x": object()}}, "JSON"),
        ({"kind": "gossip"}, "kind"),
        ({"channel": "news"}, "unknown channel"),
        ({"channel": "messages:ceo"}, "does not match"),
        ({"thread_id": "has space"}, "thread id"),
    ],
)
def test_bad_messages_are_one_clear_usage_error(fields: dict, fragment: str) -> None:
    base = {"from_role": "cto", "subject": "Plan"}
    with pytest.raises(InvalidMessage) as info:
        Message.build(**{**base, **fields})
    assert fragment in str(info.value)
    assert isinstance(info.value, UsageError) and "\n" not in str(info.value)


def test_body_size_is_checked_against_the_setting() -> None:
    body = {"text": "x" * 5000}
    Message.build(from_role="cto", subject="x", body=body, max_body_bytes=6000)
    with pytest.raises(InvalidMessage, match="max_body_bytes=4096"):
        Message.build(from_role="cto", subject="x", body=body, max_body_bytes=4096)
    m = Message.build(from_role="cto", subject="x", body={"é": "ü"})
    assert json.loads(m.encoded_body) == {"é": "ü"}


def test_channel_forms() -> None:
    for ok in ("messages:all", "messages:cto", "decisions:7", "workflow:wf-1.a", "health"):
        assert valid_channel(ok), ok
    for bad in ("messages:", "messages:CTO", "decisions:", "other:1", "health:x", ""):
        assert not valid_channel(bad), bad
    assert workflow_channel("w1") == "workflow:w1"


def test_notice_round_trip() -> None:
    m = Message.build(from_role="cto", to_role="ceo", subject="Ship", thread_id="t-1")
    notice = parse_notice(Notice.of(m, 12).encode().encode())
    assert notice.db_id == 12 and notice.channel == "messages:ceo" and notice.thread_id == "t-1"


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xff\xfe", b"null", b"[1]", b'"x"', b"{}", b'{"db_id": 0}', b'{"db_id": "x"}',
     b'{"db_id": 1}', b"{" * 100_000, "x" * (MAX_NOTICE_BYTES + 1)],
)
def test_bad_payloads_raise_only_invalid_message(payload: bytes | str) -> None:
    with pytest.raises(InvalidMessage):
        parse_notice(payload)


@given(st.one_of(st.binary(max_size=200), st.text(max_size=200),
                 st.recursive(st.none() | st.integers() | st.text(max_size=5),
                              lambda c: st.lists(c) | st.dictionaries(st.text(max_size=5), c),
                              max_leaves=10).map(json.dumps)))
def test_parse_notice_never_raises_anything_else(payload: bytes | str) -> None:
    with contextlib.suppress(InvalidMessage):
        parse_notice(payload)


def _signed(key: bytes = b"k" * 64, body: object = None) -> tuple[Message, str]:
    m = Message.build(from_role="cto", to_role="ceo", subject="Ship",
                      body=body if body is not None else {"x": [1, "é"]})
    return m, Notice.of(m, 12, prev=9, created_at=datetime.now(UTC)).encode(key)


def test_a_signed_notice_carries_the_message_and_verifies_with_the_key() -> None:
    m, wire = _signed()
    notice = parse_notice(wire.encode(), b"k" * 64)
    assert notice.verified and notice.prev == 9 and notice.carries_body
    stored = notice.stored()
    assert (stored.id, stored.uuid, stored.body, stored.subject) == (12, m.uuid, m.body, "Ship")
    assert not parse_notice(wire.encode()).verified  # no key: a plain wake-up
    assert not parse_notice(wire.encode(), b"other" * 13).verified


@pytest.mark.parametrize("change", [("Ship", "Sink"), ('"prev":9', '"prev":11'),
                                    ('"db_id":12', '"db_id":13'), ('"x"', '"y"')])
def test_a_tampered_signed_notice_does_not_verify(change: tuple[str, str]) -> None:
    _, wire = _signed()
    tampered = wire.replace(*change)
    assert tampered != wire
    notice = parse_notice(tampered, b"k" * 64)
    assert not notice.verified
    with pytest.raises(ValueError, match="verified"):
        notice.stored()


def test_verified_cannot_come_from_the_wire() -> None:
    forged = json.dumps({"db_id": 3, "channel": "messages:all", "kind": "broadcast",
                         "from_role": "cto", "to_role": "all", "prev": 2, "body": {},
                         "verified": True, "_verified": True, "sig": "0" * 32})
    assert not parse_notice(forged, b"k" * 64).verified


def test_a_large_body_is_signed_but_not_carried() -> None:
    _, wire = _signed(b"k", body={"text": "x" * 7000})
    assert len(wire) < MAX_NOTICE_BYTES
    notice = parse_notice(wire, b"k")
    assert notice.verified and not notice.carries_body
