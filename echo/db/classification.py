"""What a database error means: transient (degrade and retry) or permanent (fail that one item).

Database errors are classified here, once, for every caller: see `classify` and
`TRANSIENT_SQLSTATES`. The pool (`echo.db.pool`) applies it to whatever the statements
inside a connection raise, so the rest of ECHO sees `StoreUnavailable` or
`StoreRejected`, never the driver's exceptions. What Postgres refuses before it is
asked (`nul_free`) is said here too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import asyncpg

from echo.errors import LeaseLost, MigrationError, StoreRejected, StoreUnavailable
from echo.runtime import Backoff

#: How a long-lived component waits out a database that does not answer (a transient
#: error below): the participant's handling, the pool's claims and writes.
DB_BACKOFF = Backoff(initial=0.1, max=5.0)

#: The one table of what a database error means, by SQLSTATE: a code (five characters)
#: or a class (its first two). What is listed here is transient: the database is
#: down, restarting, failing over, overloaded or too slow, and the same statement can
#: succeed later, so a long-lived component degrades and retries. Every other SQLSTATE
#: is permanent (data, constraint, undefined table or object, syntax, a program limit,
#: a raised exception): Postgres refused this statement and will refuse it again, so the
#: one item it was about fails, with the reason, and is never retried blindly.
TRANSIENT_SQLSTATES: dict[str, str] = {
    "08": "connection exception",
    "28": "invalid authorization (the server refuses us until someone fixes it)",
    "3D": "the database does not exist (yet)",
    "40": "transaction rollback (serialization failure, deadlock)",
    "53": "insufficient resources (too many connections, disk full, out of memory)",
    "57": "operator intervention (admin shutdown, cannot connect now, statement timeout)",
    "58": "system error (I/O)",
    "25006": "read-only transaction (a demoted primary, a standby)",
    "55006": "object in use",
    "55P03": "lock not available",
    "0A000": "cached statement invalidated by a schema change (asyncpg's own code for it)",
}
#: The SQLSTATE of a write refused by the role-lease fence (shared/sql/009_role_leases.sql):
#: `LeaseLost`, a kind of `StoreUnavailable`.
FENCED = "EL001"
#: The SQLSTATE of a read-only transaction: the server we reached is no longer the primary.
READ_ONLY = "25006"
#: Raised below the SQL level: the socket, a timeout, a closed or released connection,
#: asyncpg's own bookkeeping. The statement may not even have reached the server.
DRIVER_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    # Several hosts with target_session_attrs=read-write and none writable yet: a
    # failover in progress (the old primary gone, the standby not yet promoted).
    asyncpg.exceptions.TargetServerAttributeNotMatched,
)

DRIVER_ERRORS: tuple[type[Exception], ...] = (asyncpg.PostgresError, *DRIVER_UNAVAILABLE)


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a server-reported (or asyncpg-classified) error, else None."""
    code = getattr(exc, "sqlstate", None)
    return code if isinstance(exc, asyncpg.PostgresError) and isinstance(code, str) else None


def is_transient(code: str) -> bool:
    """Whether an error with SQLSTATE `code` may go away by itself (see the table)."""
    return code in TRANSIENT_SQLSTATES or code[:2] in TRANSIENT_SQLSTATES


def classify(exc: BaseException, doing: str, where: str) -> StoreUnavailable | StoreRejected | None:
    """The `EchoError` a driver error means, or None for anything that is not one.

    `doing` says what was attempted ("store task results"), `where` which database
    (safe to print). The driver's exception is kept as `__cause__` by the caller."""
    code = sqlstate(exc)
    reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    if code is None:
        if not isinstance(exc, DRIVER_UNAVAILABLE):
            return None
        return StoreUnavailable(
            f"cannot {doing}: database {where} is unavailable ({reason}); "
            "check that Postgres is running and ECHO_DATABASE_URL is right")
    if code == FENCED:  # a write as a role whose lease moved on: not this agent's to make
        return LeaseLost(f"cannot {doing}: {reason}", sqlstate=code)
    if is_transient(code):
        return StoreUnavailable(
            f"cannot {doing}: database {where} is unavailable ({reason}) [SQLSTATE {code}]; "
            "check that Postgres is running and ECHO_DATABASE_URL is right", sqlstate=code)
    return StoreRejected(reason, sqlstate=code)


def nul_free(value: Any) -> bool:
    """Whether `value` can be stored as text or jsonb: Postgres refuses a NUL character
    in both, so no string in it (dict keys and values, list items) may hold one."""
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, dict):
        return all(nul_free(k) and nul_free(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(nul_free(item) for item in value)
    return True


#: SQLSTATE undefined_table: the namespace was never migrated (or is behind).
UNDEFINED_TABLE = "42P01"


@contextlib.contextmanager
def schema_guard(namespace: str) -> Iterator[None]:
    """A missing table means the namespace was never migrated: say what to run."""
    try:
        yield
    except (asyncpg.UndefinedTableError, StoreRejected) as exc:
        if sqlstate(exc) != UNDEFINED_TABLE and getattr(exc, "sqlstate", None) != UNDEFINED_TABLE:
            raise
        raise MigrationError(
            f"schema {namespace!r} is not migrated ({getattr(exc, 'reason', exc)}); "
            "run `echoctl db migrate`"
        ) from exc
