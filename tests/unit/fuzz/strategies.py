"""Hypothesis strategies the fuzz tests share: hostile text, JSON, and near-misses."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

#: Strings that look like attacks on whatever reads them next.
INJECTIONS = (
    "'; DROP TABLE messages; --", "\" OR 1=1 --", "$(rm -rf /)", "`id`", "; ls", "| cat /etc/passwd",
    "../../../etc/passwd", "%s%s%s%n", "{0.__class__}", "${jndi:ldap://x}", "<script>alert(1)</script>",
    "\x1b[31mred\x1b[0m", "line\nbreak", "\r\n", "\u202eevil", "\ud800", "\x00", "a\x00b",
    "NaN", "Infinity", "-0", "1e309", "null", "[]", "{}", "", " ", "all", "messages:all",
    "echo:messages:all", "*", "?", "__proto__", "\uff23\uff34\uff2f", "ceo ", " ceo", "c" * 300,
)

hostile_text = st.one_of(
    st.sampled_from(INJECTIONS),
    st.text(max_size=80),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", max_size=70),
)

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | hostile_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=12,
)

#: What a Notice looks like on the wire, with each field possibly of the wrong type.
notice_dicts = st.fixed_dictionaries(
    {},
    optional={
        "db_id": st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(),
                           hostile_text, st.booleans(), st.none(), st.lists(st.integers(), max_size=2)),
        "channel": st.one_of(hostile_text, st.integers(), st.none()),
        "kind": st.one_of(hostile_text, st.integers(), st.none()),
        "from_role": st.one_of(hostile_text, st.integers(), st.none()),
        "to_role": st.one_of(hostile_text, st.integers(), st.none()),
        "thread_id": st.one_of(hostile_text, st.none(), st.integers()),
        "subject": st.one_of(hostile_text, st.none(), json_values),
        "extra": json_values,
    },
)


def _dumps(value: Any) -> str:
    return json.dumps(value)  # NaN and Infinity come out as bare words, as a sloppy sender sends


wire_payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300),
    st.sampled_from(INJECTIONS),
    notice_dicts.map(_dumps),
    notice_dicts.map(lambda d: _dumps(d).encode("utf-8", "surrogatepass")),
    json_values.map(_dumps),
    notice_dicts.map(lambda d: _dumps(d).encode() + b"\xff"),  # invalid UTF-8 tail
    st.integers(min_value=8000, max_value=9000).map(lambda n: b'{"db_id": 1, "pad": "' + b"x" * n + b'"}'),
)
