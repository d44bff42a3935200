"""ECHO's Supervisor against Erlang/OTP's own `supervisor`, case by case.

Each case (a strategy, an intensity, children with their restart types, and what
happens to which child) runs through OTP 25's `supervisor` in an escript
(`otp/supervisor_cases.erl`) and through `echo.runtime.Supervisor` here, and both
print the same lines: every worker's start, its own exit, its stop by its supervisor
(in order), then the final state of the top supervisor. The outputs must be equal.

Without `erl` the test is skipped, and under ECHO_REQUIRE_SERVICES=1 it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from echo.runtime import (
    ActorExit,
    ActorNotAlive,
    ChildSpec,
    Process,
    Supervisor,
    is_normal,
)
from echo.runtime.actor import Actor

from .helpers import Crash

ESCRIPT = Path(__file__).parent / "otp" / "supervisor_cases.erl"

# (name, strategy, max_restarts, children, actions); a child is (id, restart, "worker")
# or (id, restart, ("supervisor", strategy, max_restarts, children)); an action is
# (what, path) with what in crash / normal / shutdown and path the ids from the top.
Child = tuple[str, str, Any]
CASES: list[tuple[str, str, int, list[Child], list[tuple[str, list[str]]]]] = [
    ("one_for_one", "one_for_one", 3, [("a", "permanent", "worker"), ("b", "permanent", "worker"),
                                       ("c", "permanent", "worker")], [("crash", ["b"])]),
    ("one_for_all", "one_for_all", 3, [("a", "permanent", "worker"), ("b", "permanent", "worker"),
                                       ("c", "permanent", "worker")], [("crash", ["b"])]),
    ("rest_for_one", "rest_for_one", 3, [("a", "permanent", "worker"), ("b", "permanent", "worker"),
                                         ("c", "permanent", "worker")], [("crash", ["b"])]),
    ("restart_types", "one_for_one", 5,
     [("p", "permanent", "worker"), ("t", "transient", "worker"), ("m", "temporary", "worker")],
     [("normal", ["t"]), ("crash", ["m"]), ("shutdown", ["p"])]),
    ("transient_crash", "one_for_one", 3, [("t", "transient", "worker"), ("u", "transient", "worker")],
     [("crash", ["t"]), ("shutdown", ["u"])]),
    ("one_for_all_temporary_sibling", "one_for_all", 3,
     [("a", "permanent", "worker"), ("m", "temporary", "worker"), ("c", "permanent", "worker")],
     [("crash", ["c"])]),
    ("rest_for_one_transient", "rest_for_one", 3,
     [("a", "permanent", "worker"), ("t", "transient", "worker"), ("c", "permanent", "worker")],
     [("normal", ["t"]), ("crash", ["a"])]),
    ("intensity_exceeded", "one_for_one", 2,
     [("a", "permanent", "worker"), ("b", "permanent", "worker"), ("c", "permanent", "worker")],
     [("crash", ["a"]), ("crash", ["b"]), ("crash", ["a"])]),
    ("intensity_one_for_all", "one_for_all", 1, [("a", "permanent", "worker"), ("b", "permanent", "worker")],
     [("crash", ["b"]), ("crash", ["a"])]),
    ("normal_exits_are_not_counted", "one_for_one", 1,
     [("t", "transient", "worker"), ("a", "permanent", "worker")],
     [("normal", ["t"]), ("crash", ["a"])]),
    ("transient_child_supervisor_gives_up", "one_for_one", 3,
     [("w", "permanent", "worker"),
      ("inner", "transient", ("supervisor", "one_for_one", 0, [("x", "permanent", "worker"),
                                                             ("y", "permanent", "worker")]))],
     [("crash", ["inner", "x"])]),
    ("permanent_child_supervisor_gives_up", "one_for_one", 3,
     [("w", "permanent", "worker"),
      ("inner", "permanent", ("supervisor", "one_for_one", 0, [("x", "permanent", "worker")]))],
     [("crash", ["inner", "x"])]),
    ("child_supervisor_within_its_limit", "rest_for_one", 3,
     [("inner", "permanent", ("supervisor", "one_for_all", 1, [("x", "permanent", "worker"),
                                                              ("y", "permanent", "worker")])),
      ("w", "permanent", "worker")],
     [("crash", ["inner", "y"])]),
    ("giving_up_escalates_to_the_top", "one_for_one", 0,
     [("w", "permanent", "worker"),
      ("inner", "permanent", ("supervisor", "one_for_one", 0, [("x", "permanent", "worker")]))],
     [("crash", ["inner", "x"])]),
]


# ---------------------------------------------------------------- OTP's side


def _term(value: Any) -> str:
    """A Python case as Erlang terms: str ids are atoms, a case's name a string."""
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return "{" + ", ".join(_term(v) for v in value) + "}"
    return "[" + ", ".join(_term(v) for v in value) + "]"


def run_otp(tmp_path: Path) -> dict[str, list[str]]:
    escript = shutil.which("escript")
    if escript is None:
        reason = "no Erlang/OTP: `escript` is not on PATH (apt-get install erlang-base)"
        if os.environ.get("ECHO_REQUIRE_SERVICES") == "1":
            pytest.fail(f"ECHO_REQUIRE_SERVICES=1 and {reason}")
        pytest.skip(reason)
    cases = tmp_path / "cases.terms"
    cases.write_text("".join(
        f'{{"{name}", {_term((strategy, max_r, children, actions))[1:-1]}}}.\n'
        for name, strategy, max_r, children, actions in CASES))
    out = subprocess.run([escript, str(ESCRIPT), str(cases)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return _split(out.splitlines())


def _split(lines: Sequence[str]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    current: list[str] = []
    for line in lines:
        if line.startswith("case "):
            current = result.setdefault(line[5:], [])
        elif line.strip():
            current.append(line)
    return result


# ---------------------------------------------------------------- ECHO's side


def _reason(reason: object) -> str:
    if reason in ("normal", "killed"):
        return str(reason)
    if is_normal(reason):
        return "shutdown"  # "shutdown" or ("shutdown", term), as OTP's {shutdown, _}
    return "crash"


class Worker(Actor):
    """OTP's worker in the escript: logs its start, its own exit, its stop."""

    def __init__(self, label: str, log: list[str]) -> None:
        super().__init__(name=label)
        self.label = label
        self.log = log
        self.leaving = False

    async def init(self) -> None:
        self.log.append(f"start {self.label}")

    async def handle_cast(self, what: str) -> None:
        self.leaving = True
        self.log.append(f"exit {self.label} {what}")
        if what == "crash":
            raise Crash(self.label)
        await self.stop(what)

    async def terminate(self, reason: object) -> None:
        if not self.leaving:
            self.log.append(f"stop {self.label} {_reason(reason)}")


def _specs(children: Sequence[Child], log: list[str]) -> list[ChildSpec]:
    specs = []
    for child_id, restart, kind in children:
        if kind == "worker":
            specs.append(ChildSpec(child_id, lambda i=child_id: Worker(i, log), restart=restart))
        else:
            _, strategy, max_r, grandchildren = kind
            specs.append(ChildSpec(
                child_id, lambda s=strategy, m=max_r, g=grandchildren: Supervisor(
                    _specs(g, log), strategy=s, max_restarts=m, max_seconds=3600),
                restart=restart, type="supervisor"))
    return specs


async def _child(sup: Supervisor, child_id: str) -> Process:
    for info in await sup.which_children():
        if info.id == child_id:
            assert info.process is not None, f"{child_id} is not running"
            return info.process
    raise AssertionError(f"no child {child_id}")


async def _state(sup: Supervisor) -> str:
    rows = sorted((str(i.id), "running" if i.process is not None else "undefined")
                  for i in await sup.which_children())
    return "[" + ",".join(f"{i}:{s}" for i, s in rows) + "]"


async def run_echo(case: tuple[str, str, int, list[Child], list[tuple[str, list[str]]]]) -> list[str]:
    _name, strategy, max_r, children, actions = case
    log: list[str] = []
    top = Supervisor(_specs(children, log), strategy=strategy,  # type: ignore[arg-type]
                     max_restarts=max_r, max_seconds=3600)
    await top.start()
    for what, path in actions:
        sups = [top]
        for child_id in path[:-1]:
            inner = await _child(sups[-1], child_id)
            assert isinstance(inner, Supervisor)
            sups.append(inner)
        victim = await _child(sups[-1], path[-1])
        assert isinstance(victim, Worker)
        victim.cast(what)
        await victim.wait()
        for sup in reversed(sups):  # the same barrier as the escript's
            with contextlib.suppress(ActorExit, ActorNotAlive):
                await sup.count_children()
    if top.alive:
        log.append(f"final alive {await _state(top)}")
        await top.stop()
    else:
        log.append(f"final down {_reason(await top.wait())}")
    return log


async def test_supervisor_matches_otp_event_for_event(tmp_path: Path) -> None:
    otp = run_otp(tmp_path)
    assert sorted(otp) == sorted(c[0] for c in CASES), "the escript ran every case"
    differences = []
    for case in CASES:
        echo = await run_echo(case)
        if echo != otp[case[0]]:
            differences.append(f"{case[0]}:\n  OTP:  {otp[case[0]]}\n  ECHO: {echo}")
    assert not differences, "\n".join(differences)
