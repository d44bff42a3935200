"""Postgres: where the DSN comes from, connection pools, and the migrations.

Postgres is the source of truth. Every other module gets its connections from
`connect_pool`, which sets the organisation's schema (`settings.namespace`) as
the search path, decodes jsonb to Python, and counts any connection that comes
back to the pool inside an open transaction: that is the bug that once stalled
the original system for hours, so it is watched for on every release.

The schema lives in `shared/sql/NNN_name.sql`. `migrate` applies the files that
are missing, each in its own transaction, serialised by an advisory lock so two
processes starting together do not race, and refuses to go on when a file that was
already applied has changed since (its checksum is recorded with it).

Database errors are classified here, once, for every caller: see `classify` and
`TRANSIENT_SQLSTATES`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio
import asyncpg

from echo.config import Settings, project_path, redact_url
from echo.embedded import EmbeddedPostgres
from echo.errors import LeaseLost, MigrationError, StoreRejected, StoreUnavailable

#: The driver's types, for the stores' signatures: only echo.db, the LISTEN connection
#: (echo.listener) and the stores import the driver (an import-linter contract).
Connection = asyncpg.Connection
Record = asyncpg.Record

log = logging.getLogger(__name__)

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
_DRIVER_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    # Several hosts with target_session_attrs=read-write and none writable yet: a
    # failover in progress (the old primary gone, the standby not yet promoted).
    asyncpg.exceptions.TargetServerAttributeNotMatched,
)

_DRIVER_ERRORS: tuple[type[Exception], ...] = (asyncpg.PostgresError, *_DRIVER_UNAVAILABLE)


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
        if not isinstance(exc, _DRIVER_UNAVAILABLE):
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


def embedded_server(settings: Settings) -> EmbeddedPostgres:
    return EmbeddedPostgres(settings.state_dir / "postgres")


#: The state directories whose embedded server this process found stopped and started,
#: so the CLI can stop it again when the command ends (echo.org.lifecycle.release_embedded).
_embedded_started: dict[Path, Settings] = {}


def embedded_started() -> list[Settings]:
    return list(_embedded_started.values())


async def resolve_dsn(settings: Settings) -> str:
    """The configured DSN, or the embedded server's (started if it is not running)."""
    if settings.database_url:
        return settings.database_url
    server = embedded_server(settings)
    if server.running_pid() is None:
        _embedded_started.setdefault(settings.state_dir.resolve(), settings)
    return await anyio.to_thread.run_sync(server.start)


def describe(settings: Settings) -> str:
    """Which database is in use, safe to print."""
    if settings.database_url:
        return redact_url(settings.database_url)
    return f"embedded ({embedded_server(settings).data_dir})"


@contextlib.contextmanager
def translate_errors(settings: Settings, doing: str) -> Iterator[None]:
    """Turn driver errors into `StoreUnavailable` (transient) or `StoreRejected`
    (permanent), by `classify`. Errors of ECHO and of the caller pass through."""
    try:
        yield
    except _DRIVER_ERRORS as exc:
        translated = classify(exc, doing, describe(settings))
        if translated is None:
            raise
        raise translated from exc


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


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _release_reset(conn: asyncpg.Connection) -> None:
    """Replaces asyncpg's reset on release, which costs a round trip per release
    (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`; about 0.2 ms, as
    much as a small INSERT). Pooled connections carry no session state here: LISTEN
    has its own connection, advisory locks are transaction-level, settings are
    `SET LOCAL`. asyncpg still rolls back a transaction left open before this runs."""


_application_name = "echo"


def set_application_name(name: str) -> None:
    """Name this process's connections (`pg_stat_activity.application_name`), so a DBA
    can see which agent holds which connection; an agent calls it with its role."""
    global _application_name
    _application_name = name[:63]


def connect_kwargs(settings: Settings, *, fence: str | None = None) -> dict[str, Any]:
    """`fence` ('role/epoch/holder') makes every write of these connections checked
    against the role's lease in the database (009_role_leases.sql). It is a startup
    parameter, so it costs no round trip and survives the pool's resets."""
    server_settings = {"search_path": settings.namespace, "application_name": _application_name}
    if fence:
        server_settings["echo.fence"] = fence
    return {
        "timeout": settings.connect_timeout,
        "command_timeout": settings.command_timeout,
        "server_settings": server_settings,
    }


def _left_in_transaction(conn: Any) -> bool:
    """Whether a pooled connection is being released inside an open transaction.

    This runs in a ``finally``, so it must never raise over the error it cleans up
    after: when the server drops a connection, asyncpg releases its proxy at once,
    and any method called on it then raises `InterfaceError`. A released or closed
    connection holds no transaction of ours."""
    try:
        return not conn.is_closed() and bool(conn.is_in_transaction())
    except asyncpg.InterfaceError:
        return False


class Database:
    """A process's connection pool, with the only two ways to use it.

    `transaction()` acquires a connection and opens a transaction that commits or
    rolls back before the connection goes back; `acquire()` is for single
    statements that autocommit. This is where database errors are classified, once:
    whatever the statements inside raise leaves as `StoreUnavailable` (transient:
    degrade and retry) or `StoreRejected` (permanent: fail that one item), see
    `TRANSIENT_SQLSTATES`. A connection that found a read-only server is closed, and
    the pool's others with it, so the next acquire reaches the new primary.
    """

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.leaks = 0
        #: Told of every write the role-lease fence refused (the agent halts its tree).
        self.on_fenced: Callable[[LeaseLost], object] | None = None

    @classmethod
    async def open(
        cls, settings: Settings, *, min_size: int = 1, max_size: int | None = None, fence: str | None = None
    ) -> Database:
        """A pool for this process: `settings.pool_size` connections unless told otherwise.
        With `fence`, every write checks the role's lease (see `connect_kwargs`)."""
        dsn = await resolve_dsn(settings)
        size = max_size or settings.pool_size
        with translate_errors(settings, "connect"):
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min(min_size, size),
                max_size=size,
                init=_init_connection,
                reset=_release_reset,
                **connect_kwargs(settings, fence=fence),
            )
        return cls(settings, pool)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection for autocommit statements. `leaks` counts any that come back
        inside an open transaction (asyncpg then rolls it back); it must stay 0."""
        try:
            with translate_errors(self.settings, "reach the database"):
                async with self.pool.acquire() as conn:
                    try:
                        yield cast(asyncpg.Connection, conn)
                    except asyncpg.PostgresError as exc:
                        if sqlstate(exc) == READ_ONLY:
                            await self._expire()
                        raise
                    finally:
                        if _left_in_transaction(conn):
                            self.leaks += 1
                            log.error("a connection came back to the pool inside a transaction")
        except LeaseLost as exc:
            if self.on_fenced is not None:
                self.on_fenced(exc)
            raise

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside a transaction that commits on success and rolls back on
        any error, cancellation included. The commit and the rollback are shielded: a
        cancel arriving while the body runs (a supervisor stopping a relay, a timeout
        scope) must not cut the rollback short and send the connection back to the pool
        inside an open transaction."""
        with translate_errors(self.settings, "reach the database"):
            async with self.acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                try:
                    yield conn
                except BaseException:
                    with anyio.CancelScope(shield=True), contextlib.suppress(*_DRIVER_ERRORS):
                        await tx.rollback()
                    raise
                with anyio.CancelScope(shield=True):
                    await tx.commit()

    async def _expire(self) -> None:
        """The server is read-only (a failover demoted it): no connection of the pool is
        used again, this one included; each is closed when it comes back, and the next
        acquire connects anew (to the new primary, with `target_session_attrs`)."""
        log.warning("database %s is read-only (a failover?); reconnecting", describe(self.settings))
        await self.pool.expire_connections()

    async def close(self) -> None:
        with contextlib.suppress(*_DRIVER_ERRORS):
            with anyio.fail_after(5):
                await self.pool.close()
                return
        self.pool.terminate()


async def connect(settings: Settings) -> asyncpg.Connection:
    """One connection outside any pool: the LISTEN connection, migrations, the CLI."""
    dsn = await resolve_dsn(settings)
    with translate_errors(settings, "connect"):
        conn: asyncpg.Connection = await asyncpg.connect(dsn, **connect_kwargs(settings))
        await _init_connection(conn)
    return conn


@contextlib.asynccontextmanager
async def direct(dsn: str, doing: str, *, application: str = "echoctl",
                 connect_timeout: float = 5.0) -> AsyncIterator[asyncpg.Connection]:
    """One connection to `dsn` itself, before any settings apply (an embedded server's
    own: who is connected to it); driver errors as `StoreUnavailable`/`StoreRejected`."""
    where = redact_url(dsn)
    try:
        conn = await asyncpg.connect(dsn, timeout=connect_timeout,
                                     server_settings={"application_name": application})
    except _DRIVER_ERRORS as exc:
        raise classify(exc, doing, where) or StoreUnavailable(f"cannot {doing}: {exc}") from exc
    try:
        try:
            yield conn
        except _DRIVER_ERRORS as exc:
            translated = classify(exc, doing, where)
            if translated is None:
                raise
            raise translated from exc
    finally:
        with contextlib.suppress(*_DRIVER_ERRORS):
            await conn.close(timeout=2)


async def read_only(conn: asyncpg.Connection) -> bool:
    """Whether the server behind `conn` refuses writes: a standby in recovery, or a
    primary set `default_transaction_read_only` (how a demotion begins)."""
    return bool(await conn.fetchval(_READ_ONLY))


_READ_ONLY = "SELECT current_setting('transaction_read_only') = 'on'"


@contextlib.asynccontextmanager
async def connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """`connect`, closed on exit; what the statements inside raise is classified as in
    `Database.acquire`."""
    conn = await connect(settings)
    try:
        with translate_errors(settings, "reach the database"):
            yield conn
    finally:
        with contextlib.suppress(*_DRIVER_ERRORS):
            await conn.close(timeout=2)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


_MIGRATION_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


def migrations() -> list[Migration]:
    """The numbered SQL files in shared/sql, in order."""
    found: dict[int, Migration] = {}
    for path in sorted((project_path("shared") / "sql").glob("*.sql")):
        match = _MIGRATION_RE.match(path.name)
        if match:
            version = int(match[1])
            if version in found:
                raise MigrationError(
                    f"two migrations are numbered {version:03d} ({found[version].path.name}, "
                    f"{path.name}); renumber one above the highest")
            found[version] = Migration(version, match[2], path)
    return list(found.values())


_QUERY_NAME_RE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def load_queries(name: str) -> dict[str, str]:
    """The named queries of `shared/sql/queries/<name>.sql`, each after a `-- name: x` line.

    SQL stays in .sql files that a reviewer (or psql) can read; Python refers to
    a query by its name.
    """
    text = (project_path("shared") / "sql" / "queries" / f"{name}.sql").read_text()
    parts = _QUERY_NAME_RE.split(text)
    return {parts[i]: parts[i + 1].strip().rstrip(";") for i in range(1, len(parts), 2)}


_BOOKKEEPING = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


def _check_unchanged(migration: Migration, applied_checksum: str) -> None:
    """An applied migration is history: editing its file would leave databases migrated
    before the edit different from those migrated after, with nothing to tell."""
    if migration.checksum != applied_checksum:
        raise MigrationError(
            f"migration {migration.path.name} was changed after it was applied here "
            f"(checksum {migration.checksum[:12]} != applied {applied_checksum[:12]}); restore "
            "the file as it was and put the change in a new migration (shared/sql/NNN_name.sql)"
        )


def _check_in_order(migration: Migration, newest_applied: int) -> None:
    """A migration numbered below one already applied arrived late (a merge, a file
    restored): applied now it would run after its successors here but before them on a
    fresh database, so two databases would differ with nothing to tell."""
    if migration.version < newest_applied:
        raise MigrationError(
            f"migration {migration.path.name} is older than the newest applied here "
            f"({newest_applied:03d}); renumber it above {newest_applied:03d} so it runs last everywhere"
        )


async def migrate(settings: Settings) -> list[Migration]:
    """Bring the namespace's schema up to date; return the migrations applied now."""
    schema = settings.namespace
    applied: list[Migration] = []
    async with connection(settings) as conn:
        with translate_errors(settings, "migrate"):
            lock_key = int(hashlib.sha256(f"echo.migrate.{schema}".encode()).hexdigest()[:15], 16)
            await conn.execute("SELECT pg_advisory_lock($1)", lock_key)
            try:
                await conn.execute(_BOOKKEEPING.format(schema=schema))
                done = {
                    r["version"]: r["checksum"]
                    for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
                }
                newest = max(done, default=0)
                for migration in migrations():
                    if migration.version in done:
                        _check_unchanged(migration, done[migration.version])
                        continue
                    _check_in_order(migration, newest)
                    try:
                        async with conn.transaction():
                            await conn.execute(migration.sql)
                            await conn.execute(
                                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                                migration.version,
                                migration.name,
                                migration.checksum,
                            )
                    except asyncpg.PostgresError as exc:
                        code = sqlstate(exc)
                        if code is None or is_transient(code):
                            raise  # the database went away: StoreUnavailable, retried
                        raise MigrationError(
                            f"migration {migration.path.name} failed: {exc}; "
                            f"the schema stays at the previous version"
                        ) from exc
                    applied.append(migration)
                    log.info("applied migration %s", migration.path.name)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", lock_key)
    return applied


async def schema_version(conn: asyncpg.Connection) -> int:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def drop_namespace(settings: Settings) -> None:
    """Remove an organisation's schema and everything in it (the tests, the benchmarks)."""
    async with connection(settings) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{settings.namespace}" CASCADE')
