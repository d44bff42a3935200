"""The log line format: fields written by the formatter come back from `parse_line`."""

from __future__ import annotations

import io
import logging

from echo.logs import FieldsFormatter, fields, parse_line, select


def _line(message: str, *args: object, **extra: object) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(FieldsFormatter())
    logger = logging.getLogger("echo.test.logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.warning(message, *args, extra=fields(**extra))
    return out.getvalue().rstrip("\n")


def test_fields_round_trip_through_a_line() -> None:
    line = _line("task %s failed: %s", 12, "claude unavailable (not logged in)",
                 role="cto", task=12, workflow="wf-1", outcome="failed", reason='say "no" = 1')
    entry = parse_line(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "echo.test.logs"
    assert entry["message"] == "task 12 failed: claude unavailable (not logged in)"
    assert entry["fields"] == {"role": "cto", "task": "12", "workflow": "wf-1", "outcome": "failed",
                               "reason": 'say "no" = 1'}
    assert "role=cto task=12" in line  # a person reads the fields too


def test_select_filters_on_fields_and_keeps_other_lines_out() -> None:
    lines = [_line("one", role="cto", task=1), _line("two", role="cto", task=2),
             "Traceback (most recent call last):", _line("no fields")]
    assert [e["message"] for e in select(lines, {"task": "2"})] == ["two"]
    assert len(select(lines, {})) == 4
