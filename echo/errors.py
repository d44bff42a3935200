"""Every error ECHO shows a user, in one place.

Callers catch `EchoError` or a precise leaf. The CLI prints `str(error)` as one
line and exits with `error.exit_code`, so each message names what was wrong and
what to do about it.

    EchoError
    ├── UsageError            bad input from the user (exit code 2)
    │   ├── ConfigError       a bad setting in config/*.toml, ECHO_* or a flag
    │   ├── UnknownRole       a role with no agents/<role>/role.toml
    │   └── InvalidMessage    an envelope that fails validation (empty subject, too large...)
    ├── StoreUnavailable      Postgres cannot be reached or answered too slowly
    ├── TransportUnavailable  Redis cannot be reached
    ├── MigrationError        the schema could not be brought up to date
    ├── NotFound              a task, message or decision id that does not exist
    └── ClaudeError           the Claude CLI failed (see echo.work.claude for the leaves)

The runtime (`echo.runtime`) has its own hierarchy because it imports nothing from
the rest of ECHO.
"""

from __future__ import annotations


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
    """Postgres is down, unreachable or too slow."""


class TransportUnavailable(EchoError):
    """Redis is down or unreachable."""


class MigrationError(EchoError):
    """A migration failed; the schema is left at the last good version."""


class NotFound(EchoError):
    """An id that does not exist."""


class ClaudeError(EchoError):
    """The Claude CLI failed."""
