"""Every error ECHO shows a user, in one place.

Callers catch `EchoError` or a precise leaf. The CLI prints `str(error)` as one
line and exits with `error.exit_code`, so each message names what was wrong and
what to do about it.

    EchoError
    ├── UsageError            bad input from the user (exit code 2)
    │   ├── ConfigError       a bad setting in config/*.toml, ECHO_* or a flag
    │   ├── UnknownRole       a role with no agents/<role>/role.toml
    │   ├── InvalidMessage    an envelope that fails validation (empty subject, too large...)
    │   └── BadRepository     a repository `repo add` refuses (not git, no base, dirty, detached)
    ├── StoreUnavailable      Postgres cannot be reached or answered too slowly (transient)
    │   └── LeaseLost         a write as a role after its lease passed to another agent
    ├── StoreRejected         Postgres refused a statement: data, constraint, schema (permanent)
    ├── TransportUnavailable  Redis cannot be reached
    ├── PortTaken             another program listens on the port asked for (exit code 1)
    ├── MigrationError        the schema could not be brought up to date
    ├── NotFound              a task, message or decision id that does not exist
    ├── AlreadyDecided        an approval request that is no longer pending (HTTP 409)
    └── TaskError             an executor's error: whether and when its task runs again
        ├── CommandFailed         a `command` task exited non-zero, timed out or was killed
        ├── WorkspaceError        git failed setting up, committing or merging a task's workspace
        └── ClaudeError           the Claude CLI failed
            ├── ClaudeNotInstalled   no `claude` binary (ECHO_CLAUDE_BIN, @anthropic-ai/claude-code)
            ├── ClaudeAuthError      not logged in, or an invalid API key (never retried)
            ├── ClaudeCreditError    the credit balance is too low (never retried)
            ├── ClaudeUsageLimit     the plan's usage limit; retried after its reset time
            ├── ClaudeApiError       another API error: 429 and 5xx/529 retried, others not
            ├── ClaudeCrashed        no JSON result: a crash or a signal (retried)
            ├── ClaudeTimeout        the wall-clock timeout passed; its process group was killed
            ├── ClaudeDeferred       the run stopped at a tool call awaiting approval (the task waits)
            ├── ClaudeHung           no event for `claude_idle_timeout` s: the watchdog killed it (retried)
            ├── ClaudeLoop           the same tool call over and over: stopped, never retried blindly
            └── ClaudeHeld           the governor holds Claude runs back: a budget is spent, the
                                     account is paused (plan window) or the burn-rate breaker tripped

The two store errors are the failure model of every component: `echo.db.Database`
classifies each driver error once (`echo.db.TRANSIENT_SQLSTATES`). On
`StoreUnavailable` a component degrades and retries the same work later; on
`StoreRejected` it fails the one item the statement was about (a task, a workflow),
logs it with the reason, and goes on with the others: retrying cannot help.

A task's executor raises `TaskError`s (the Claude, command and workspace errors): their
typed `retryable`, `retry_at` and `run` tell the work pool whether and when the task runs
again (`echo.work.pool.retry`); any other error is retried unless it is a `UsageError`.

The runtime (`echo.runtime`) has its own hierarchy because it imports nothing from
the rest of ECHO.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class EchoError(Exception):
    """Base of every error ECHO raises on purpose."""

    exit_code = 1


class UsageError(EchoError):
    """The user asked for something that cannot be done as asked."""

    exit_code = 2


class ConfigError(UsageError):
    """A setting is invalid."""


class UnknownRole(UsageError):
    """A role name that has no agents/<role>/role.toml."""


class InvalidMessage(UsageError):
    """A message that fails validation."""


class StoreUnavailable(EchoError):
    """Postgres is down, unreachable, failing over or too slow: try again later."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class StoreRejected(EchoError):
    """Postgres refused a statement (bad data, a constraint, a missing table, a bug):
    the same statement will be refused again. `reason` is the server's one line,
    `sqlstate` its code (e.g. 23505 for a unique violation)."""

    def __init__(self, reason: str, *, sqlstate: str) -> None:
        super().__init__(f"the database refused it: {reason} [SQLSTATE {sqlstate}]")
        self.reason = reason
        self.sqlstate = sqlstate


class LeaseLost(StoreUnavailable):
    """The database refused a write made as a role: this agent's lease epoch is no longer
    the role's (another agent took over, or the lease expired). It is a kind of
    `StoreUnavailable` so every component treats it as "this write did not happen, try
    later" and none crashes on it; the agent's lease keeper meanwhile notices the loss,
    stops the role's tree and stands by."""


class TransportUnavailable(EchoError):
    """Redis is down or unreachable."""


class PortTaken(EchoError):
    """Another program already listens on the address asked for. Exit code 1, not 2: the
    command was well formed and would work once the port is free; the message names
    the option that picks another port (it differs between `up` and `serve`)."""


class MigrationError(EchoError):
    """A migration failed; the schema is left at the last good version."""


class NotFound(EchoError):
    """An id that does not exist."""


class AlreadyDecided(EchoError):
    """An approval request that was decided already (or used, or expired): deciding it
    again is refused, in one line naming its state and who decided it."""


class TaskError(EchoError):
    """An error a task's executor raises on purpose. Whether the task runs again is part
    of it, typed: `retryable`; `retry_at`, when the next attempt may start (a plan's
    announced reset); `run`, the Claude run's ledger row (a `RunRecord`) when the CLI
    was started, stored with the failure."""

    retryable: bool = True
    retry_at: datetime | None = None
    run: Any = None


class CommandFailed(TaskError):
    """A `command` task failed; a timeout or a kill by signal may succeed next time."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class WorkspaceError(TaskError):
    """git failed on a task's workspace (a mirror, a worktree, a commit); retried, since
    a lock or a fetch may work next time."""

    retryable = True


class BadRepository(UsageError):
    """A repository that cannot be worked in: not git, no such base branch, a detached
    HEAD or uncommitted changes on the base checkout, a bad name."""


class ClaudeError(TaskError):
    """The Claude CLI failed (retried unless a subclass says otherwise)."""


class ClaudeNotInstalled(ClaudeError):
    """No `claude` binary: a broken installation, not the task's fault, but not retried."""

    retryable = False


class ClaudeAuthError(ClaudeError):
    """Not logged in, or the API key is invalid: retrying cannot help."""

    retryable = False


class ClaudeCreditError(ClaudeError):
    """The account has no credit left: retrying cannot help."""

    retryable = False


class ClaudeUsageLimit(ClaudeError):
    """The plan's usage limit; the task runs again at `retry_at` (the announced reset)."""

    def __init__(self, message: str, retry_at: datetime) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class ClaudeApiError(ClaudeError):
    """An API error the CLI reported: 429, 529 and 5xx are retried, the rest are not."""

    def __init__(self, message: str, status: int | None, *, retryable: bool) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class ClaudeCrashed(ClaudeError):
    """The CLI printed no JSON result (a crash, or killed by a signal)."""


class ClaudeTimeout(ClaudeError):
    """The run passed its wall-clock timeout; its process group was killed."""


class ClaudeDeferred(ClaudeError):
    """The run stopped at a tool call that needs an operator's approval (the PreToolUse
    hook answered `defer`): the task waits as `awaiting_approval`, holding no worker."""

    retryable = True


class ClaudeHung(ClaudeError):
    """The run printed nothing for `claude_idle_timeout` seconds (a stalled API, a hung
    tool): the watchdog killed its process group. Retried, resuming the session."""


class ClaudeLoop(ClaudeError):
    """The run made the same tool call (name and input) many times in a row: stopped.
    Not retried: the same prompt would loop again; a person looks first."""

    retryable = False


class ClaudeHeld(ClaudeError):
    """The governor starts no run now (its message says why: `budget — cto spent $6.30
    of $5.00 today`, `paused until 02:19 UTC (session limit)`); retried later."""


def sole_error(exc: BaseException) -> EchoError | None:
    """The one `EchoError` an exception group carries, if that is all it carries.

    A failure inside a task group reaches its caller wrapped in an `ExceptionGroup`
    (anyio, asyncio.TaskGroup), and a command's one-line message would become a
    traceback of every frame. A group whose leaves are one `EchoError` (possibly
    nested) stands for that error; anything else (a bug, several errors) is not
    hidden and returns None."""
    if isinstance(exc, EchoError):
        return exc
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return sole_error(exc.exceptions[0])
    return None


def one_line(text: str) -> str:
    """`text` fit for a one-line message: control characters (a newline in a TOML key,
    an escape sequence) are shown escaped instead of breaking the line or the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
