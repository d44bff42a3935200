"""Postgres: where the DSN comes from, connection pools, and the migrations.

Postgres is the source of truth. Every other module gets its connections from
`connect_pool`, which sets the organisation's schema (`settings.namespace`) as
the search path, decodes jsonb to Python, and counts any connection that comes
back to the pool inside an open transaction: that is the bug that once stalled
the original system for hours, so it is watched for on every release.

The schema lives in `shared/sql/NNN_name.sql`. `migrate` applies the files that
are missing, each in its own transaction, serialised by an advisory lock so two
processes starting together do not race.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio
import asyncpg

from echo.config import Settings, project_path, redact_url
from echo.embedded import EmbeddedPostgres
from echo.errors import MigrationError, StoreUnavailable

log = logging.getLogger(__name__)

#: What a dead, restarting or overloaded database raises through asyncpg.
STORE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.InterfaceError,
    asyncpg.ConnectionDoesNotExistError,
)

#: Anything that means "the database did not do it": down, slow, failing over. Long-lived
#: components catch this, go degraded and retry; they never die of it.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    StoreUnavailable,
    asyncpg.PostgresError,
    *STORE_ERRORS,
)


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
    """Turn driver-level failures into one clear `StoreUnavailable` line."""
    try:
        yield
    except STORE_ERRORS as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise StoreUnavailable(
            f"cannot {doing}: database {describe(settings)} is unavailable ({reason}); "
            "check that Postgres is running and ECHO_DATABASE_URL is right"
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


def connect_kwargs(settings: Settings) -> dict[str, Any]:
    return {
        "timeout": settings.connect_timeout,
        "command_timeout": settings.command_timeout,
        "server_settings": {"search_path": settings.namespace, "application_name": _application_name},
    }


class Database:
    """A process's connection pool, with the only two ways to use it.

    `transaction()` acquires a connection and opens a transaction that commits or
    rolls back before the connection goes back; `acquire()` is for single
    statements that autocommit. Every failure of the database surfaces as
    `StoreUnavailable`.
    """

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.leaks = 0

    @classmethod
    async def open(cls, settings: Settings, *, min_size: int = 1, max_size: int | None = None) -> Database:
        """A pool for this process: `settings.pool_size` connections unless told otherwise."""
        dsn = await resolve_dsn(settings)
        size = max_size or settings.pool_size
        with translate_errors(settings, "connect"):
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min(min_size, size),
                max_size=size,
                init=_init_connection,
                reset=_release_reset,
                **connect_kwargs(settings),
            )
        return cls(settings, pool)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection for autocommit statements. `leaks` counts any that come back
        inside an open transaction (asyncpg then rolls it back); it must stay 0."""
        with translate_errors(self.settings, "reach the database"):
            async with self.pool.acquire() as conn:
                try:
                    yield cast(asyncpg.Connection, conn)
                finally:
                    if not conn.is_closed() and conn.is_in_transaction():
                        self.leaks += 1
                        log.error("a connection came back to the pool inside a transaction")

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        with translate_errors(self.settings, "reach the database"):
            async with self.acquire() as conn, conn.transaction():
                yield conn

    async def close(self) -> None:
        with contextlib.suppress(*STORE_ERRORS):
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
async def connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(settings)
    try:
        yield conn
    finally:
        with contextlib.suppress(*STORE_ERRORS):
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
    found = []
    for path in sorted((project_path("shared") / "sql").glob("*.sql")):
        match = _MIGRATION_RE.match(path.name)
        if match:
            found.append(Migration(int(match[1]), match[2], path))
    return found


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
                for migration in migrations():
                    if migration.version in done:
                        continue
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
    """Remove an organisation's schema and everything in it (tests, `echoctl db reset`)."""
    async with connection(settings) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{settings.namespace}" CASCADE')
