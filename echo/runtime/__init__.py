"""ECHO's OTP core: actors, supervisors, tasks, registries and OS processes on asyncio.

Everything a user needs is importable from here; the modules behind it are free to
move. Start with `Actor` (a GenServer) and `Supervisor` (restart rules and ordered
startup); `echo.runtime._core` explains exit reasons, monitors and links, and
`echo.runtime._exceptions` lists the errors.

This package imports nothing from the rest of ECHO.
"""

from echo.runtime._core import (
    KILLED,
    NORMAL,
    SHUTDOWN,
    Down,
    Exit,
    ExitReason,
    MonitorRef,
    Process,
    Shutdown,
    demonitor,
    is_normal,
    link,
    monitor,
    unlink,
)
from echo.runtime._exceptions import (
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
from echo.runtime.actor import Actor
from echo.runtime.backoff import Attempts, Backoff
from echo.runtime.child_spec import ChildInfo, ChildSpec
from echo.runtime.dynamic import DynamicSupervisor
from echo.runtime.process import OSProcess
from echo.runtime.registry import Registry
from echo.runtime.service import Service
from echo.runtime.supervisor import Supervisor, gave_up
from echo.runtime.supervisor_base import SupervisorBase
from echo.runtime.task import Task

__all__ = [
    "KILLED",
    "NORMAL",
    "SHUTDOWN",
    "Actor",
    "ActorExit",
    "ActorNotAlive",
    "AlreadyRegistered",
    "Attempts",
    "Backoff",
    "CallTimeout",
    "ChildInfo",
    "ChildSpec",
    "Down",
    "DynamicSupervisor",
    "Exit",
    "ExitReason",
    "MaxChildrenReached",
    "MonitorRef",
    "OSProcess",
    "Process",
    "ProcessExited",
    "Registry",
    "RuntimeFault",
    "Service",
    "Shutdown",
    "StartError",
    "StartTimeout",
    "Supervisor",
    "SupervisorBase",
    "SupervisorEscalation",
    "Task",
    "TaskTimeout",
    "UnexpectedMessage",
    "UnknownChild",
    "demonitor",
    "gave_up",
    "is_normal",
    "link",
    "monitor",
    "unlink",
]
