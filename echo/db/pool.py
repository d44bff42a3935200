"""Postgres connections: where the DSN comes from, the connection pool, single connections.

Postgres is the source of truth. Every other module gets its connections from
`Database.open`, which sets the organisation's schema (`settings.namespace`) as
the search path, decodes jsonb to Python, and counts any connection that comes
back to the pool inside an open transaction: that is the bug that once stalled
the original system for hours, so it is watched for on every release.

Whatever the statements inside raise is classified by `echo.db.classification`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import anyio
import asyncpg

from echo.db.classification import DRIVER_ERRORS, READ_ONLY, classify, sqlstate
from echo.embedded import EmbeddedPostgres
from echo.errors import LeaseLost, StoreUnavailable
from echo.slices import DatabaseSettings
from echo.urls import redact_url

#: The driver's types, for the stores' signatures: only echo.db, the LISTEN connection
#: (echo.listener) and the stores import the driver (an import-linter contract).
Connection = asyncpg.Connection
Record = asyncpg.Record

log = logging.getLogger(__name__)


def embedded_server(settings: DatabaseSettings) -> EmbeddedPostgres:
    return EmbeddedPostgres(settings.state_dir / "postgres")


#: The state directories whose embedded server this process found stopped and started,
#: so the CLI can stop it again when the command ends (echo.org.node.lifecycle.release_embedded).
_embedded_started: dict[Path, DatabaseSettings] = {}


def embedded_started() -> list[DatabaseSettings]:
    return list(_embedded_started.values())


async def resolve_dsn(settings: DatabaseSettings) -> str:
    """The configured DSN, or the embedded server's (started if it is not running)."""
    if settings.database_url:
        return settings.database_url
    server = embedded_server(settings)
    if server.running_pid() is None:
        _embedded_started.setdefault(settings.state_dir.resolve(), settings)
    return await anyio.to_thread.run_sync(server.start)


def describe(settings: DatabaseSettings) -> str:
    """Which database is in use, safe to print."""
    if settings.database_url:
        return redact_url(settings.database_url)
    return f"embedded ({embedded_server(settings).data_dir})"


@contextlib.contextmanager
def translate_errors(settings: DatabaseSettings, doing: str) -> Iterator[None]:
    """Turn driver errors into `StoreUnavailable` (transient) or `StoreRejected`
    (permanent), by `classify`. Errors of ECHO and of the caller pass through."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        translated = classify(exc, doing, describe(settings))
        if translated is None:
            raise
        raise translated from exc


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


def connect_kwargs(settings: DatabaseSettings, *, fence: str | None = None) -> dict[str, Any]:
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

    def __init__(self, settings: DatabaseSettings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.leaks = 0
        #: Told of every write the role-lease fence refused (the agent halts its tree).
        self.on_fenced: Callable[[LeaseLost], object] | None = None

    @classmethod
    async def open(
        cls, settings: DatabaseSettings, *, min_size: int = 1, max_size: int | None = None,
        fence: str | None = None,
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
                    with anyio.CancelScope(shield=True), contextlib.suppress(*DRIVER_ERRORS):
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
        with contextlib.suppress(*DRIVER_ERRORS):
            with anyio.fail_after(5):
                await self.pool.close()
                return
        self.pool.terminate()


async def connect(settings: DatabaseSettings) -> asyncpg.Connection:
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
    except DRIVER_ERRORS as exc:
        raise classify(exc, doing, where) or StoreUnavailable(f"cannot {doing}: {exc}") from exc
    try:
        try:
            yield conn
        except DRIVER_ERRORS as exc:
            translated = classify(exc, doing, where)
            if translated is None:
                raise
            raise translated from exc
    finally:
        with contextlib.suppress(*DRIVER_ERRORS):
            await conn.close(timeout=2)


async def read_only(conn: asyncpg.Connection) -> bool:
    """Whether the server behind `conn` refuses writes: a standby in recovery, or a
    primary set `default_transaction_read_only` (how a demotion begins)."""
    return bool(await conn.fetchval(_READ_ONLY))


_READ_ONLY = "SELECT current_setting('transaction_read_only') = 'on'"


@contextlib.asynccontextmanager
async def connection(settings: DatabaseSettings) -> AsyncIterator[asyncpg.Connection]:
    """`connect`, closed on exit; what the statements inside raise is classified as in
    `Database.acquire`."""
    conn = await connect(settings)
    try:
        with translate_errors(settings, "reach the database"):
            yield conn
    finally:
        with contextlib.suppress(*DRIVER_ERRORS):
            await conn.close(timeout=2)
