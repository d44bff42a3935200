"""Fuzzing `echoctl`'s arguments: whatever a user types, the answer is the command
running or exit 2 with one `error:` line, never a traceback or a box of text.

In process, the command tree is parsed for real with every command's body replaced
by a stub, so nothing runs (no `up`, no database); `echo.cli.main` does the rest
exactly as it does for a user. A few real subprocess runs check the whole program.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest
import typer.main
from hypothesis import event, given, settings
from hypothesis import strategies as st

import echo.cli
from tests.unit.fuzz.strategies import INJECTIONS


def _leaves(command: Any) -> list[Any]:
    children = getattr(command, "commands", None)
    if not children:
        return [command]
    return [leaf for child in children.values() for leaf in _leaves(child)]


def _stubbed() -> Any:
    tree = typer.main.get_command(echo.cli.app)
    for leaf in _leaves(tree):
        leaf.callback = lambda *args, **kwargs: None
    return tree


TREE = _stubbed()
OPTIONS = sorted({o for leaf in _leaves(TREE) for p in leaf.params for o in p.opts if o.startswith("-")}
                 | {o for p in TREE.params for o in p.opts if o.startswith("-")})
WORDS = ["broadcast", "messages", "worker", "up", "down", "status", "logs", "restart", "agent",
         "db", "migrate", "tasks", "submit", "list", "show", "cancel", "retry", "nosuch", "all", "cto"]
arg_text = st.one_of(
    st.sampled_from([i for i in INJECTIONS if "\x00" not in i]),
    st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=20),
    st.integers(min_value=-(2**40), max_value=2**40).map(str),
    st.sampled_from(["0", "-1", "1.5", "nan", "inf", "--", "-", "-x", "--json", "--bogus", "--help"]),
)
argvs = st.tuples(
    st.lists(st.one_of(st.sampled_from([o for o in OPTIONS if o in ("--namespace", "--log-level")]),
                       arg_text), max_size=2),
    st.lists(st.sampled_from(WORDS), max_size=2),
    st.lists(st.one_of(st.sampled_from(OPTIONS), arg_text), max_size=6),
).map(lambda parts: [*parts[0], *parts[1], *parts[2]])


def run_main(argv: Sequence[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.setattr(echo.cli, "app", lambda **kw: TREE(list(argv), prog_name="echoctl", **kw))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            pytest.raises(SystemExit) as info:
        echo.cli.main()
    code = info.value.code
    return (code if isinstance(code, int) else 0 if code is None else 1), out.getvalue(), err.getvalue()


@settings(max_examples=250, deadline=None)
@given(argvs)
def test_any_arguments_run_or_give_exit_2_and_one_line(argv: list[str]) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        code, out, err = run_main(argv, monkeypatch)
    event(f"exit {code}")
    assert "Traceback" not in out + err
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        lines = err.strip().splitlines()
        if lines:
            assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
            assert "--help" in lines[0]  # where to look next
        else:  # a group with no subcommand: its help was shown instead
            assert "Usage" in out, (argv, out)


@pytest.mark.parametrize("argv", [
    ["broadcast", "--bogus", "x"], ["tasks", "submit"], ["messages", "--limit", "abc"], ["nosuch"],
])
def test_the_real_program_says_bad_arguments_in_one_line(argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "echo", *argv], capture_output=True, text=True,
                          timeout=60, check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr
