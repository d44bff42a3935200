"""The chaos suite's "processed once" check can fail (issue 15, bug 5): it counts the
participants' log lines, which no key dedupes, so a message handled twice shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from echo.config import Settings
from echo.org.state import log_file
from tests.chaos.conftest import assert_processed_at_most_once, processed_in_logs

LINE = "2026-11-26 02:00:00,000 INFO echo.org.agent: {role} processed message {id} from operator: x\n"


def _logs(tmp_path: Path, lines: dict[str, list[int]]) -> Settings:
    s = Settings(state_dir=tmp_path)
    for role, ids in lines.items():
        path = log_file(s, role)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(LINE.format(role=role, id=i) for i in ids))
    return s


def test_once_each_passes(tmp_path: Path) -> None:
    s = _logs(tmp_path, {"cto": [1, 2, 3], "ceo": [1, 2, 3, 99]})
    assert_processed_at_most_once(processed_in_logs(s, ["cto", "ceo"]), ["cto", "ceo"], [1, 2, 3])


def test_a_message_processed_twice_fails(tmp_path: Path) -> None:
    s = _logs(tmp_path, {"cto": [1, 2, 3, 2], "ceo": [1, 2, 3]})  # a restarted cto did 2 again
    with pytest.raises(AssertionError, match=r"1 \(role, message\) pairs processed more than once"):
        assert_processed_at_most_once(processed_in_logs(s, ["cto", "ceo"]), ["cto", "ceo"],
                                      [1, 2, 3])


def test_a_vacuous_count_fails(tmp_path: Path) -> None:
    s = _logs(tmp_path, {"cto": [], "ceo": [1]})  # e.g. the line was renamed or not logged
    with pytest.raises(AssertionError, match="only 1 of 6 processings logged"):
        assert_processed_at_most_once(processed_in_logs(s, ["cto", "ceo"]), ["cto", "ceo"],
                                      [1, 2, 3])
