"""The error hierarchy: one base, precise leaves, readable messages."""

from __future__ import annotations

import pytest

from echo.runtime import (
    ActorExit,
    ActorNotAlive,
    AlreadyRegistered,
    CallTimeout,
    MaxChildrenReached,
    ProcessExited,
    RuntimeFault,
    StartError,
    StartTimeout,
    SupervisorEscalation,
    TaskTimeout,
    UnexpectedMessage,
    UnknownChild,
)

from .helpers import Crash

ALL = [
    CallTimeout("a", "req", 1.0),
    TaskTimeout("t", 2.0),
    ActorNotAlive("a"),
    ActorExit("a", Crash("x")),
    UnexpectedMessage("a", "call", 1),
    StartError("c", Crash("x")),
    StartTimeout("c", 3.0),
    SupervisorEscalation("c", 4, Crash("x"), intensity=4, max_restarts=3, max_seconds=5.0),
    MaxChildrenReached(2),
    UnknownChild("c"),
    AlreadyRegistered("k", "p"),
    ProcessExited("python", 3),
]


@pytest.mark.parametrize("error", ALL, ids=lambda e: type(e).__name__)
def test_every_error_is_a_runtime_fault_with_a_message(error: RuntimeFault) -> None:
    assert isinstance(error, RuntimeFault)
    assert str(error)


def test_timeouts_are_timeout_errors() -> None:
    assert isinstance(CallTimeout("a", "r", 1), TimeoutError)
    assert isinstance(TaskTimeout("t", 1), TimeoutError)


def test_escalation_is_readable_by_the_caller() -> None:
    last = Crash("db down")
    error = SupervisorEscalation("db", 4, last, intensity=4, max_restarts=3, max_seconds=5)
    assert (error.child_id, error.restarts, error.last_error) == ("db", 4, last)
    assert error.__cause__ is last
    assert "'db'" in str(error) and "4 time(s)" in str(error) and "db down" in str(error)


def test_start_timeout_is_a_start_error() -> None:
    assert isinstance(StartTimeout("c", 1), StartError)
