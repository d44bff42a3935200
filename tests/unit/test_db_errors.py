"""The failure model's one table, without Postgres: which driver errors are transient
(`StoreUnavailable`: degrade and retry) and which are permanent (`StoreRejected`:
fail the one item), built from asyncpg's own exception classes and SQLSTATEs."""

from __future__ import annotations

import asyncpg
import asyncpg.exceptions as pgx
import pytest

from echo import db
from echo.config import Settings
from echo.db.classification import classify, is_transient
from echo.errors import EchoError, MigrationError, StoreRejected, StoreUnavailable

TRANSIENT = [
    pgx.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    pgx.ConnectionFailureError("connection failure"),
    pgx.AdminShutdownError("terminating connection due to administrator command"),
    pgx.CrashShutdownError("crash shutdown"),
    pgx.CannotConnectNowError("the database system is starting up"),
    pgx.TooManyConnectionsError("sorry, too many clients already"),
    pgx.QueryCanceledError("canceling statement due to statement timeout"),
    pgx.ReadOnlySQLTransactionError("cannot execute UPDATE in a read-only transaction"),
    pgx.SerializationError("could not serialize access"),
    pgx.DeadlockDetectedError("deadlock detected"),
    pgx.LockNotAvailableError("could not obtain lock"),
    pgx.InvalidCachedStatementError("cached statement plan is invalid"),
    pgx.InvalidPasswordError("password authentication failed for user x"),
    asyncpg.InterfaceError("cannot call Connection.fetch(): connection has been released"),
    pgx.OutdatedSchemaCacheError("cache outdated", schema="s", data_type="t", position="1"),
    ConnectionRefusedError(111, "Connection refused"),
    OSError("Network is unreachable"),
    TimeoutError(),
]

PERMANENT = [
    pgx.UntranslatableCharacterError("unsupported Unicode escape sequence"),
    pgx.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'),
    pgx.DataError("invalid input for query argument $1: 'x' (an integer is required)"),
    pgx.NumericValueOutOfRangeError("value out of range"),
    pgx.InvalidTextRepresentationError("invalid input syntax for type json"),
    pgx.UniqueViolationError("duplicate key value violates unique constraint"),
    pgx.CheckViolationError("new row violates check constraint"),
    pgx.ForeignKeyViolationError("violates foreign key constraint"),
    pgx.NotNullViolationError("null value in column"),
    pgx.UndefinedTableError('relation "agent_tasks" does not exist'),
    pgx.UndefinedColumnError('column "x" does not exist'),
    pgx.UndefinedObjectError('type "x" does not exist'),
    pgx.UndefinedFunctionError("function f() does not exist"),
    pgx.PostgresSyntaxError("syntax error at or near"),
    pgx.RaiseError("raised by a trigger"),
    pgx.InFailedSQLTransactionError("current transaction is aborted"),
    pgx.ProgramLimitExceededError("index row size exceeds maximum"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient_errors_become_store_unavailable(exc: BaseException) -> None:
    got = classify(exc, "claim tasks", "postgresql://h/db")
    assert isinstance(got, StoreUnavailable), got
    assert str(got).startswith("cannot claim tasks: database postgresql://h/db is unavailable")
    assert "\n" not in str(got)


@pytest.mark.parametrize("exc", PERMANENT, ids=lambda e: type(e).__name__)
def test_permanent_errors_become_store_rejected(exc: BaseException) -> None:
    got = classify(exc, "claim tasks", "postgresql://h/db")
    assert isinstance(got, StoreRejected), got
    assert got.sqlstate == exc.sqlstate  # type: ignore[attr-defined]
    assert got.reason == str(exc) and got.sqlstate in str(got)


def test_the_table_decides_by_code_before_class() -> None:
    # 25 (invalid transaction state) is permanent as a class, 25006 (read-only) is not.
    assert not is_transient("25P02") and is_transient("25006")
    # 55 (object not in prerequisite state): only "lock not available" and "in use" pass.
    assert is_transient("55P03") and not is_transient("55000")
    assert is_transient("08006") and is_transient("57P01") and is_transient("53300")
    for code in ("22P05", "23505", "42P01", "42704", "42601", "P0001", "XX000"):
        assert not is_transient(code), code


@pytest.mark.parametrize("exc", [ValueError("x"), KeyError("k"), RuntimeError("r"),
                                 EchoError("already ours")])
def test_anything_else_is_left_alone(exc: BaseException) -> None:
    assert classify(exc, "x", "y") is None
    with pytest.raises(type(exc)), db.translate_errors(Settings().database, "do it"):
        raise exc


def test_translate_errors_keeps_the_driver_error_as_the_cause() -> None:
    cause = pgx.UniqueViolationError("duplicate key")
    with pytest.raises(StoreRejected) as got, db.translate_errors(Settings().database, "do it"):
        raise cause
    assert got.value.__cause__ is cause and got.value.sqlstate == "23505"
    with pytest.raises(StoreUnavailable) as down, db.translate_errors(Settings().database, "do it"):
        raise pgx.AdminShutdownError("terminating connection")
    assert down.value.sqlstate == "57P01"


def test_schema_guard_names_the_command_to_run() -> None:
    for exc in (pgx.UndefinedTableError('relation "x" does not exist'),
                StoreRejected('relation "x" does not exist', sqlstate="42P01")):
        with pytest.raises(MigrationError, match="run `echoctl db migrate`"), db.schema_guard("ns"):
            raise exc
    with pytest.raises(StoreRejected), db.schema_guard("ns"):
        raise StoreRejected("duplicate key", sqlstate="23505")


def test_nul_free_looks_everywhere_a_string_can_hide() -> None:
    assert db.nul_free({"a": ["b", ("c", 1, None, 2.5)], "d": {"e": "f"}})
    for bad in ("a\x00b", {"k\x00": 1}, {"k": "\x00"}, ["ok", ["\x00"]], ("\x00",)):
        assert not db.nul_free(bad), bad
