"""Every error the runtime raises on purpose, in one place.

Callers catch `RuntimeFault` or a precise leaf::

    RuntimeFault                 base of the runtime's errors
    ├── CallTimeout              `call` got no reply in time (also a `TimeoutError`)
    ├── TaskTimeout              `Task.await_` ran out of time (also a `TimeoutError`)
    ├── ActorNotAlive            the target is not running: fail fast instead of hanging
    ├── ActorExit                the target exited while a call waited on it; `.reason`
    ├── UnexpectedMessage        a message for which the actor defines no handler
    ├── StartError               a child failed to start; `.child_id`, `.reason`
    │   └── StartTimeout         an `OSProcess` did not report ready in time
    ├── SupervisorEscalation     restart intensity exceeded; `.child_id`, `.restarts`,
    │                            `.last_error`
    ├── MaxChildrenReached       a `DynamicSupervisor` is full
    ├── UnknownChild             no child with that id or process
    ├── AlreadyRegistered        a unique `Registry` key is taken; `.key`, `.owner`
    └── ProcessExited            an `OSProcess` exited nonzero; `.returncode`

Several of these are also *exit reasons*: an OS process that fails exits with
`ProcessExited`, which a parent supervisor reads like any crash. A supervisor that gives
up exits with ``("shutdown", SupervisorEscalation(...))``: a shutdown, as in OTP, with
the details kept (`gave_up(reason)` reads them). The runtime imports nothing from the rest
of ECHO, so this hierarchy is separate from `echo.errors`.
"""

from __future__ import annotations

from typing import Any


class RuntimeFault(Exception):
    """Base of every error the runtime raises on purpose."""


class CallTimeout(RuntimeFault, TimeoutError):
    """The reply did not arrive in time. The request may still be handled later."""

    def __init__(self, target: object, request: Any, timeout: float) -> None:
        super().__init__(f"call to {target!r} timed out after {timeout:g} s (request {request!r})")
        self.target = target
        self.request = request
        self.timeout = timeout


class TaskTimeout(RuntimeFault, TimeoutError):
    """`Task.await_` gave up; the task has been shut down, as in Elixir."""

    def __init__(self, task: object, timeout: float) -> None:
        super().__init__(f"{task!r} did not finish within {timeout:g} s and was shut down")
        self.task = task
        self.timeout = timeout


class ActorNotAlive(RuntimeFault):
    """The target was never started or has already exited."""

    def __init__(self, target: object, reason: Any = None) -> None:
        detail = "was never started" if reason is None else f"exited with {reason!r}"
        super().__init__(f"{target!r} is not alive: it {detail}")
        self.target = target
        self.reason = reason


class ActorExit(RuntimeFault):
    """The target exited before replying; `reason` is its exit reason."""

    def __init__(self, target: object, reason: Any) -> None:
        super().__init__(f"{target!r} exited before replying: {reason!r}")
        self.target = target
        self.reason = reason
        if isinstance(reason, BaseException):
            self.__cause__ = reason


class UnexpectedMessage(RuntimeFault):
    """A call or cast reached an actor that does not handle that kind of message."""

    def __init__(self, target: object, kind: str, message: Any) -> None:
        super().__init__(f"{target!r} has no handle_{kind} for {message!r}")
        self.target = target
        self.kind = kind
        self.message = message


class StartError(RuntimeFault):
    """A child could not start; the start's caller sees this instead of a half-started tree."""

    def __init__(self, child_id: Any, reason: Any) -> None:
        super().__init__(f"child {child_id!r} failed to start: {reason!r}")
        self.child_id = child_id
        self.reason = reason
        if isinstance(reason, BaseException):
            self.__cause__ = reason


class StartTimeout(StartError):
    """An `OSProcess` did not report ready within its start timeout."""

    def __init__(self, child_id: Any, timeout: float) -> None:
        super().__init__(child_id, f"not ready within {timeout:g} s")
        self.timeout = timeout


class SupervisorEscalation(RuntimeFault):
    """Restart intensity was exceeded, so the supervisor stopped its children and exited.

    `child_id` is the child whose failure crossed the limit, `restarts` how many times
    that child failed inside the window, `last_error` its last exit reason, and
    `intensity` how many restarts the supervisor counted in the window in all.
    """

    def __init__(
        self,
        child_id: Any,
        restarts: int,
        last_error: Any,
        *,
        intensity: int,
        max_restarts: int,
        max_seconds: float,
    ) -> None:
        super().__init__(
            f"child {child_id!r} failed {restarts} time(s) and the supervisor counted "
            f"{intensity} restart(s), over its limit of {max_restarts} in {max_seconds:g} s; "
            f"last error: {last_error!r}"
        )
        self.child_id = child_id
        self.restarts = restarts
        self.last_error = last_error
        self.intensity = intensity
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        if isinstance(last_error, BaseException):
            self.__cause__ = last_error


class MaxChildrenReached(RuntimeFault):
    """A `DynamicSupervisor` already runs `max_children` children."""

    def __init__(self, max_children: int) -> None:
        super().__init__(f"the supervisor already runs its maximum of {max_children} children")
        self.max_children = max_children


class UnknownChild(RuntimeFault):
    """No child of the supervisor matches the given id or process."""

    def __init__(self, key: Any) -> None:
        super().__init__(f"no child {key!r}")
        self.key = key


class AlreadyRegistered(RuntimeFault):
    """A unique key already belongs to a live process."""

    def __init__(self, key: Any, owner: object) -> None:
        super().__init__(f"key {key!r} is already registered by {owner!r}")
        self.key = key
        self.owner = owner


class ProcessExited(RuntimeFault):
    """An OS process exited with a nonzero status (negative: killed by that signal)."""

    def __init__(self, argv0: str, returncode: int) -> None:
        super().__init__(f"{argv0} exited with status {returncode}")
        self.argv0 = argv0
        self.returncode = returncode
