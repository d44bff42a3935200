"""`echoctl up --detach` when the console fails after the agents started (the port was
taken in the moment between up's own check and the console's start): up says why, from
the console's own line in the organisation's record, instead of "not up yet"."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from echo.commands.up import _print_console_url
from echo.config import Settings
from echo.errors import EchoError
from echo.org.node.state import AgentRecord, OrgRecord, write_org


def test_a_console_that_exited_is_reported_with_its_reason(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path / "state", namespace="t_console_not_up")
    reason = ("exit 1: error: the console cannot listen on 127.0.0.1:8765: the port is taken by "
              "another program; choose another with --console-port, or --no-console")
    write_org(s, OrgRecord(pid=os.getpid(), namespace=s.namespace, state="running",
                           console=AgentRecord(role="console", state="exited", last_error=reason)))
    with pytest.raises(EchoError) as caught:
        _print_console_url(s, os.getpid(), within=5)
    said = str(caught.value)
    assert "\n" not in said and "the port is taken" in said and "--console-port" in said
    assert f"pid {os.getpid()}" in said and "echoctl down" in said  # it runs; how to stop it
