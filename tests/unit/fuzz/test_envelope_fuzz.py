"""Fuzzing the envelope: whatever a sender builds or the wire carries, the answer is
a valid message or one `InvalidMessage` line, never another exception."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echo.bus import MAX_NOTICE_BYTES, Message, Notice, parse_notice, valid_channel
from echo.bus.channels import ROLE_RE
from echo.bus.envelope import HARD_MAX_BODY_BYTES, MAX_SUBJECT_CHARS
from echo.errors import InvalidMessage
from tests.unit.fuzz.strategies import hostile_text, json_values, notice_dicts, wire_payloads

roles = st.one_of(st.sampled_from(["ceo", "cto", "all", "operator"]), hostile_text)
channels = st.one_of(st.just(""), st.sampled_from(["messages:all", "messages:cto", "decisions:7",
                                                   "workflow:w-1", "health"]), hostile_text)
kinds = st.one_of(st.sampled_from(["broadcast", "direct", "decision"]), hostile_text, st.integers())
bodies = st.one_of(json_values, st.binary(max_size=20), st.sets(st.integers(), max_size=3),
                   st.builds(object))


@settings(max_examples=300)
@given(from_role=roles, to_role=roles, subject=hostile_text, body=bodies, channel=channels,
       kind=kinds, thread_id=st.one_of(st.none(), hostile_text),
       max_body=st.one_of(st.none(), st.integers(min_value=1, max_value=4096)))
def test_build_gives_a_valid_message_or_one_invalid_message_line(
    from_role: str, to_role: str, subject: str, body: Any, channel: str, kind: Any,
    thread_id: str | None, max_body: int | None,
) -> None:
    try:
        m = Message.build(from_role=from_role, to_role=to_role, subject=subject, body=body,
                          channel=channel, kind=kind, thread_id=thread_id, max_body_bytes=max_body)
    except InvalidMessage as exc:
        text = str(exc)
        assert text.startswith("invalid message") and "\n" not in text
        return
    # What got through is exactly what the rules allow, and what Postgres can store.
    assert ROLE_RE.match(m.from_role)
    assert m.to_role == "all" or ROLE_RE.match(m.to_role)
    assert 0 < len(m.subject) <= MAX_SUBJECT_CHARS and "\x00" not in m.subject
    assert valid_channel(m.channel)
    decoded = json.loads(m.encoded_body)
    assert "\\u0000" not in m.encoded_body
    assert max_body is None or len(m.encoded_body.encode()) <= max_body
    assert decoded == json.loads(json.dumps(body, allow_nan=False))
    notice = parse_notice(Notice.of(m, 1).encode())  # and its notice survives the wire
    assert notice.db_id == 1 and notice.channel == m.channel


def test_huge_and_deep_bodies_are_invalid_messages() -> None:
    huge = {"text": "x" * (HARD_MAX_BODY_BYTES + 1)}
    with pytest.raises(InvalidMessage, match="larger than"):
        Message.build(from_role="cto", subject="big", body=huge)
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidMessage, match="nested too deeply"):
        Message.build(from_role="cto", subject="deep", body=deep)


@settings(max_examples=400)
@given(wire_payloads)
def test_parse_notice_gives_a_notice_or_one_invalid_message_line(payload: bytes | str) -> None:
    try:
        notice = parse_notice(payload)
    except InvalidMessage as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(notice.db_id, int) and notice.db_id > 0
    size = len(payload) if isinstance(payload, bytes) else len(payload.encode())
    assert size <= MAX_NOTICE_BYTES


@settings(max_examples=200)
@given(notice_dicts)
def test_a_notice_with_wrong_types_is_rejected_not_coerced_into_nonsense(data: dict[str, Any]) -> None:
    try:
        notice = parse_notice(json.dumps(data))
    except InvalidMessage:
        return
    assert isinstance(notice.db_id, int) and not isinstance(notice.db_id, bool)
    assert isinstance(notice.channel, str) and isinstance(notice.from_role, str)
