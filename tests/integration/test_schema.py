"""shared/sql/schema.sql is exactly what the migrations make, and the migrator keeps order."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import asyncpg
import pytest

from echo import db
from echo.config import Settings
from echo.db import schema
from echo.errors import MigrationError
from echo.paths import project_path
from tests.schema import SCHEMA_FILE, fingerprint, load


async def test_schema_file_is_what_the_migrations_make(settings: Settings, pg_dsn: str) -> None:
    """A migration added without `make schema` (or a hand edit of schema.sql) fails here."""
    loaded = f"schema_load_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(pg_dsn)
    try:
        migrated = await fingerprint(conn, settings.namespace)
        await load(conn, loaded, SCHEMA_FILE.read_text())
        from_file = await fingerprint(conn, loaded)
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{loaded}" CASCADE')
        await conn.close()
    assert migrated["columns"], "the fingerprint saw no table: it would prove nothing"
    for kind in migrated:
        missing = sorted(set(migrated[kind]) - set(from_file[kind]), key=str)
        extra = sorted(set(from_file[kind]) - set(migrated[kind]), key=str)
        assert not missing and not extra, (
            f"shared/sql/schema.sql differs from the migrations in its {kind} "
            f"(run `make schema`): only in the migrations {missing[:3]}, only in the file {extra[:3]}"
        )


async def test_the_fingerprint_sees_a_difference(settings: Settings, pg_dsn: str) -> None:
    """The comparison above can fail: one changed default is seen."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        before = await fingerprint(conn, settings.namespace)
        await conn.execute("ALTER TABLE agent_actions ALTER COLUMN subject_id SET DEFAULT 'x'")
        after = await fingerprint(conn, settings.namespace)
    finally:
        await conn.close()
    assert before["columns"] != after["columns"]


def _copy_sql(tmp_path: Path, keep: set[int]) -> Path:
    shared = tmp_path / "shared"
    (shared / "sql").mkdir(parents=True)
    shutil.copytree(project_path("shared") / "sql" / "queries", shared / "sql" / "queries")
    for m in db.migrations():
        if m.version in keep:
            shutil.copy(m.path, shared / "sql" / m.path.name)
    return shared


async def test_a_late_migration_older_than_the_applied_ones_is_refused(
    pg_dsn: str, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration numbered below the newest applied one would run out of order on
    databases migrated before it arrived: one line, and nothing of it is applied."""
    versions = [m.version for m in db.migrations()]
    # A number the project skipped, below the newest: a migration that arrives late
    # (made on a branch while others landed). Its own content, so nothing depends on it.
    held_back = next(n for n in range(1, versions[-1]) if n not in versions)
    shared = _copy_sql(tmp_path, set(versions))
    s = Settings(env="test", database_url=pg_dsn, namespace=namespace, redis_url=None)
    original = project_path
    monkeypatch.setattr(schema, "project_path", lambda name: shared if name == "shared" else original(name))
    try:
        await db.migrate(s.database)
        late_name = f"{held_back:03d}_arrived_late.sql"
        (shared / "sql" / late_name).write_text("CREATE TABLE arrived_late (id int);\n")
        with pytest.raises(MigrationError) as caught:
            await db.migrate(s.database)
        message = str(caught.value)
        assert late_name in message and str(versions[-1]) in message
        assert "\n" not in message
        conn = await asyncpg.connect(pg_dsn)
        try:
            applied = await conn.fetchval(
                f'SELECT count(*) FROM "{namespace}".schema_migrations WHERE version = $1', held_back)
            made = await conn.fetchval("SELECT to_regclass($1)", f'"{namespace}".arrived_late')
        finally:
            await conn.close()
        assert applied == 0 and made is None
    finally:
        await db.drop_namespace(s.database)

