"""Child specs: how a supervisor starts and restarts one child, and what it says of it.

A `ChildSpec` is the declarative half of supervision, as in Elixir: a factory, a
restart type, a shutdown rule, and (ECHO's extension) a restart `Backoff`. Both
`Supervisor` and `DynamicSupervisor` take them; `which_children()` answers with
`ChildInfo` rows. The rules they follow are echo/runtime/supervisor.py's docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from echo.runtime._core import Process, Shutdown
from echo.runtime.backoff import Backoff

Restart: TypeAlias = Literal["permanent", "transient", "temporary"]
ChildType: TypeAlias = Literal["worker", "supervisor"]

__all__ = ["ChildInfo", "ChildSpec"]


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start and restart one child.

    ``start`` is a factory called for every (re)start; it returns an unstarted `Actor`,
    `Supervisor`, `OSProcess` or any other `Process`. ``shutdown=None`` means the
    process's default (5 s for workers, ``"infinity"`` for supervisors); ``type=None``
    is inferred from the process.
    """

    id: Any
    start: Callable[[], Process]
    restart: Restart = "permanent"
    shutdown: Shutdown | None = None
    type: ChildType | None = None
    backoff: Backoff | None = None

    def __post_init__(self) -> None:
        if self.restart not in ("permanent", "transient", "temporary"):
            raise ValueError(f"child {self.id!r}: unknown restart type {self.restart!r}")
        if self.type not in (None, "worker", "supervisor"):
            raise ValueError(f"child {self.id!r}: unknown child type {self.type!r}")
        if isinstance(self.shutdown, str) and self.shutdown not in ("brutal_kill", "infinity"):
            raise ValueError(f"child {self.id!r}: unknown shutdown {self.shutdown!r}")


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One row of `which_children()`; ``process`` is None while not running."""

    id: Any
    process: Process | None
    type: ChildType
    restart: Restart
