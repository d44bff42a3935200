"""How a supervisor tells a restarted agent which dead process it replaces
(echo/org/leases.py `Predecessor`, echo/org/__main__.py `--predecessor`)."""

from __future__ import annotations

import pytest

from echo.org.__main__ import main
from echo.org.leases import PREDECESSOR_FLAG, Predecessor
from echo.org.node.predecessors import agent_argv


@pytest.mark.parametrize("told", [Predecessor(4321), Predecessor(4321, 7)])
def test_the_argument_round_trips(told: Predecessor) -> None:
    argv = agent_argv("cto", predecessor=told)
    assert argv[-3:] == [PREDECESSOR_FLAG, told.arg(), "cto"]
    assert Predecessor.parse(told.arg()) == told


def test_a_first_start_names_no_predecessor_and_an_empty_epoch_is_unknown() -> None:
    assert PREDECESSOR_FLAG not in agent_argv("cto")
    assert Predecessor.parse("12:") == Predecessor(12)


@pytest.mark.parametrize("bad", ["", "x", "0", "12:0", "-3", "12:x"])
def test_a_bad_predecessor_is_a_usage_error(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([PREDECESSOR_FLAG, bad, "cto"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {PREDECESSOR_FLAG} takes PID or PID:EPOCH"), err
