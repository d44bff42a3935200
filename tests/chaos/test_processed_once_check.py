"""The chaos suite's "processed exactly once" check can fail (issue 15, bug 5; issue 19,
fault 1): it counts the participants' log lines, which no key dedupes, against the
attempt each inbox row names, so a message handled twice, or recorded and never
handled, shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from echo.config import Settings
from echo.org.node.state import log_file
from tests.chaos.conftest import assert_processed_exactly_once, processed_in_logs

LINE = ("2026-11-26 02:00:00,000 INFO echo.org.agent: {role} processed message {id} "
        "from operator: x attempt=a{id}{extra}\n")
ROLES = ["cto", "ceo"]
IDS = [1, 2, 3]
RECORDED = {(role, i): f"a{i}" for role in ROLES for i in IDS}


def _logs(tmp_path: Path, lines: dict[str, list[int | str]]) -> Settings:
    """Lines per role: an id is a line of the attempt the row names; "5x" a line of
    another attempt at message 5 (one that died before its commit)."""
    s = Settings(state_dir=tmp_path)
    for role, ids in lines.items():
        path = log_file(s, role)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(LINE.format(role=role, id=str(i).rstrip("x"),
                                            extra="x" if str(i).endswith("x") else "")
                                for i in ids))
    return s


def check(s: Settings) -> None:
    assert_processed_exactly_once(processed_in_logs(s, ROLES), RECORDED, ROLES, IDS)


def test_once_each_passes_and_a_rolled_back_attempt_is_not_a_processing(tmp_path: Path) -> None:
    check(_logs(tmp_path, {"cto": [1, "2x", 2, 3], "ceo": [1, 2, 3, 99]}))


def test_a_message_processed_twice_fails(tmp_path: Path) -> None:
    s = _logs(tmp_path, {"cto": [1, 2, 3, 2], "ceo": [1, 2, 3]})  # attempt a2 logged twice
    with pytest.raises(AssertionError, match=r"1 \(role, message\) pairs processed more than once"):
        check(s)


def test_recorded_but_never_handled_fails(tmp_path: Path) -> None:
    s = _logs(tmp_path, {"cto": [1, "2x", 3], "ceo": [1, 2, 3]})  # only a dead attempt's line
    with pytest.raises(AssertionError, match=r"1 \(role, message\) pairs recorded but never handled"):
        check(s)
