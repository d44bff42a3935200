"""Checks of what a person gives the client, made before anything is written.

Each returns the value it accepts or raises a `UsageError` leaf naming what was wrong,
so the CLI exits 2 and the console answers 400 with the same one line.
"""

from __future__ import annotations

import getpass
import math

from echo.bus.channels import TOPIC_ID_RE
from echo.errors import UsageError


def decider_name(via: str) -> str:
    """Who decides through `via` (the CLI, the MCP server): the OS user, as `via:<user>`
    in the audit trail, so a decision names the person at that terminal."""
    try:
        return f"{via}:{getpass.getuser()}"
    except (KeyError, OSError):
        return via


def check_decider(by: str) -> str:
    """`by` if it can name a decider in the audit trail (1-100 printable characters)."""
    name = by.strip()
    if not name or len(name) > 100 or not name.isprintable():
        raise UsageError("the decider's name must be 1-100 printable characters")
    return name


def normalise_workflow_id(value: str) -> str:
    """`12` and `wf-12` name the same workflow; what no workflow id can be (empty, a
    NUL, spaces, 65 characters) is a `UsageError`, not a question for the database."""
    if not TOPIC_ID_RE.match(value):
        raise UsageError(f"{value[:70]!r} is not a workflow id (wf-12, or 12); "
                         "`echoctl workflow list` lists them")
    return f"wf-{value}" if value.isdigit() else value


#: The largest id Postgres's bigint holds: a larger number is no id.
MAX_ID = 2**63 - 1


def check_id(value: int, what: str = "task id", *, least: int = 1) -> int:
    """`value` if it can be an id (`least` to `MAX_ID`), else a `UsageError` naming it."""
    if not least <= value <= MAX_ID:
        raise UsageError(f"{what} {value} is out of range; an id is a whole number from "
                         f"{least} to {MAX_ID}")
    return value


def check_seconds(value: float, what: str, *, least: float = 0.0,
                  most: float = 7 * 24 * 3600.0) -> float:
    """`value` if it is a number of seconds from `least` to `most` (NaN and infinity are
    not), else a `UsageError` naming `what`."""
    if not (math.isfinite(value) and least <= value <= most):
        raise UsageError(f"{what} must be between {least:g} and {most:g} seconds, not {value:g}")
    return value
