"""One log line format with structured fields, readable by people and by `echoctl logs --json`.

An agent's log is text, one event per line:

    2026-11-26 03:01:02,345 INFO echo.work.pool: task 12 failed role=cto task=12 outcome=failed

The fields after the message come from `extra=fields(...)` on the logging call
(role, task, workflow, step, outcome, ...): a person reads them in the line, and
`parse_line` turns the line back into a dict, so `echoctl logs cto --json --task 12`
filters on them. A value with a space or a quote is written as a JSON string.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (?P<level>[A-Z]+) (?P<logger>[\w.\-]+): (?P<rest>.*)$"
)
_FIELD = re.compile(r' (?P<key>[a-z_]+)=(?P<value>"(?:[^"\\]|\\.)*"|[^\s"]+)$')


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` for a logging call: `log.info("...", extra=fields(role="cto", task=12))`."""
    return {"fields": {k: v for k, v in values.items() if v is not None}}


def _value(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text)
    return text


class FieldsFormatter(logging.Formatter):
    """The standard line, then ` key=value` for each structured field of the record."""

    def __init__(self) -> None:
        super().__init__(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = getattr(record, "fields", None)
        if not extra:
            return line
        head, nl, tail = line.partition("\n")  # a traceback follows the fields' line
        suffix = "".join(f" {key}={_value(value)}" for key, value in extra.items())
        return head + suffix + nl + tail


def configure(level: str) -> None:
    """Log to stderr in this format (an agent's stderr is its log file)."""
    handler = logging.StreamHandler()
    handler.setFormatter(FieldsFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def parse_line(line: str) -> dict[str, Any]:
    """A log line as a dict (time, level, logger, message, fields, raw); a line that is
    not in the format (a traceback, a child's output) has only a message."""
    match = _LINE.match(line)
    if match is None:
        return {"message": line, "fields": {}, "raw": line}
    rest = match["rest"]
    found: dict[str, str] = {}
    while (field := _FIELD.search(rest)) is not None:
        raw = field["value"]
        found[field["key"]] = json.loads(raw) if raw.startswith('"') else raw
        rest = rest[: field.start()]
    return {
        "time": match["time"],
        "level": match["level"],
        "logger": match["logger"],
        "message": rest,
        "fields": dict(reversed(found.items())),
        "raw": line,
    }


def select(lines: list[str], wanted: dict[str, str]) -> list[dict[str, Any]]:
    """The parsed lines whose fields hold every `wanted` value (compared as text)."""
    entries = [parse_line(line) for line in lines]
    return [e for e in entries if all(str(e["fields"].get(k)) == v for k, v in wanted.items())]
