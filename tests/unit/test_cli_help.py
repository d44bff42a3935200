"""`echoctl ... --help` as a user reads it: flags show no value placeholder, list options
a metavar, and `broadcast --kind` offers only the kinds a person sends."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def help_of(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "echo", *args, "--help"], capture_output=True,
                          text=True, check=True, env={**os.environ, "COLUMNS": "120"},
                          stdin=subprocess.DEVNULL)
    return done.stdout


@pytest.mark.parametrize("command", [["up"], ["status"], ["worker"], ["workflow", "show"],
                                     ["broadcast"]])
def test_help_has_no_type_placeholders_for_flags_or_lists(command: list[str]) -> None:
    text = help_of(*command)
    assert "--help" in text and "<bool>" not in text and "list[" not in text


def test_broadcast_offers_only_the_kinds_a_person_sends() -> None:
    text = help_of("broadcast")
    assert "broadcast|direct" in text
    for internal in ("vote", "decision", "health", "system"):
        assert internal not in text.split("--kind", 1)[1].split("--json", 1)[0]
