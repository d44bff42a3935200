"""A namespace's schema: the numbered migrations of shared/sql, each applied once, in order.

The schema lives in `shared/sql/NNN_name.sql`. `migrate` applies the files that
are missing, each in its own transaction, serialised by an advisory lock so two
processes starting together do not race, and refuses to go on when a file that was
already applied has changed since (its checksum is recorded with it).
`drop_namespace` removes a namespace's schema whole (the tests, the benchmarks).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from echo.db.classification import is_transient, sqlstate
from echo.db.pool import connection, translate_errors
from echo.errors import MigrationError
from echo.paths import project_path
from echo.slices import DatabaseSettings

log = logging.getLogger(__name__)


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


async def migrate(settings: DatabaseSettings) -> list[Migration]:
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


async def drop_namespace(settings: DatabaseSettings) -> None:
    """Remove an organisation's schema and everything in it (the tests, the benchmarks)."""
    async with connection(settings) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{settings.namespace}" CASCADE')
