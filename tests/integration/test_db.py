"""echo.db against the real Postgres: migrations, the leak guard, outages."""

from __future__ import annotations

import contextlib

import anyio
import asyncpg
import pytest

from echo import db
from echo.config import Settings
from echo.errors import MigrationError, StoreRejected, StoreUnavailable
from echo.listener import Listener, notify_channel
from tests.helpers import run_cli


async def test_migrate_is_idempotent_and_recorded(settings: Settings) -> None:
    assert await db.migrate(settings.database) == []
    async with db.connection(settings.database) as conn:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        assert versions == [m.version for m in db.migrations()]
        assert await db.schema_version(conn) == db.migrations()[-1].version


async def test_concurrent_migrations_are_serialised(
    pg_dsn: str, namespace: str, tmp_path
) -> None:
    from tests.conftest import make_settings

    s = make_settings(pg_dsn, None, namespace, tmp_path)
    try:
        results: list[int] = []

        async def one() -> None:
            results.append(len(await db.migrate(s.database)))

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(one)
        assert sorted(results) == [0, 0, 0, len(db.migrations())]
    finally:
        await db.drop_namespace(s.database)


async def test_leak_guard_counts_a_connection_released_inside_a_transaction(
    settings: Settings,
) -> None:
    database = await db.Database.open(settings.database, max_size=1)
    try:
        async with database.transaction() as conn:
            await conn.execute("SELECT 1")
        assert database.leaks == 0
        async with database.acquire() as conn:
            await conn.execute("BEGIN")  # the bug the guard exists for
        assert database.leaks == 1
        async with database.acquire() as conn:
            assert not conn.is_in_transaction()  # rolled back before reuse
    finally:
        await database.close()


class _RealError(Exception):
    pass


async def test_acquire_cleanup_never_masks_the_error_it_cleans_up_after(
    settings: Settings,
) -> None:
    """Bug 6: once the server drops a pooled connection, asyncpg releases its proxy;
    the leak guard's check on that proxy must not raise over the real error."""
    database = await db.Database.open(settings.database, max_size=1)
    try:
        # The statement that sees the connection die: its own error surfaces.
        with pytest.raises(StoreUnavailable) as caught:
            async with database.acquire() as conn:
                await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        assert "released back to the pool" not in str(caught.value)
        assert "administrator command" in str(caught.value)
        assert database.leaks == 0

        # An error of the caller's own, raised after the connection died.
        with pytest.raises(_RealError):
            async with database.acquire() as conn:
                with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
                raise _RealError("the error that matters")

        async with database.acquire() as conn:  # the pool recovers
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await database.close()


async def test_unreachable_database_is_one_clear_error(settings: Settings) -> None:
    bad = settings.model_copy(
        update={"database_url": "postgresql://u:sekret@127.0.0.1:1/x", "connect_timeout": 1}
    )
    with pytest.raises(StoreUnavailable) as info:
        await db.Database.open(bad.database)
    message = str(info.value)
    assert "sekret" not in message and "***" in message
    assert "\n" not in message


async def test_a_missing_table_is_rejected_not_unavailable(settings: Settings) -> None:
    """A permanent error: the statement is refused, and the connection stays good."""
    database = await db.Database.open(settings.database, max_size=1)
    try:
        for use in (database.acquire, database.transaction):
            with pytest.raises(StoreRejected) as info:
                async with use() as conn:
                    await conn.fetch("SELECT * FROM no_such_table")
            assert info.value.sqlstate == "42P01"
            assert 'relation "no_such_table" does not exist' in str(info.value)
        async with database.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await database.close()


async def test_a_killed_backend_is_unavailable_and_the_pool_reconnects(settings: Settings) -> None:
    database = await db.Database.open(settings.database, max_size=1)
    try:
        with pytest.raises(StoreUnavailable) as info:
            async with database.acquire() as conn, db.connection(settings.database) as admin:
                pid = conn.get_server_pid()
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
                await conn.fetchval("SELECT 1")  # its backend is gone
        assert "is unavailable" in str(info.value) and "\n" not in str(info.value)
        async with database.acquire() as conn:  # a new backend
            assert conn.get_server_pid() != pid and await conn.fetchval("SELECT 1") == 1
    finally:
        await database.close()


async def test_a_read_only_server_is_unavailable_and_its_connection_not_reused(
    settings: Settings,
) -> None:
    """A demoted primary answers writes with SQLSTATE 25006: transient (the new primary
    will take them), and the connection that reached it must not carry the next write."""
    database = await db.Database.open(settings.database, max_size=1)
    try:
        async with database.acquire() as conn:
            pid = conn.get_server_pid()
            await conn.execute("SET default_transaction_read_only = on")  # as if demoted
        with pytest.raises(StoreUnavailable) as info:
            async with database.acquire() as conn:
                await conn.execute("CREATE TEMP TABLE t (x int)")
        assert info.value.sqlstate == "25006"
        async with database.acquire() as conn:
            assert conn.get_server_pid() != pid
            await conn.execute("CREATE TEMP TABLE t (x int)")  # writable again
    finally:
        await database.close()


async def test_listener_reconnects_after_restart_and_asks_for_catch_up(
    own_postgres, namespace: str, tmp_path
) -> None:
    from tests.conftest import make_settings

    s = make_settings(own_postgres.dsn, None, namespace, tmp_path)
    listener = Listener(s.database, keepalive=0.5, backoff_initial=0.05, backoff_max=0.2)
    got: list[str] = []
    arrived = anyio.Event()
    reconnected = anyio.Event()

    def on_payload(payload: str) -> None:
        got.append(payload)
        arrived.set()

    def on_reconnect() -> None:
        if listener.connects >= 2:
            reconnected.set()

    listener.on_reconnect(on_reconnect)
    await listener.listen("ping", on_payload)
    async with anyio.create_task_group() as tg:
        await tg.start(listener.run)
        assert listener.connected
        await anyio.to_thread.run_sync(own_postgres.stop, "immediate")
        await anyio.to_thread.run_sync(own_postgres.start)
        with anyio.fail_after(20):
            await reconnected.wait()
        async with db.connection(s.database) as conn:
            await conn.execute("SELECT pg_notify($1, 'after')", notify_channel(s.database, "ping"))
        with anyio.fail_after(10):
            await arrived.wait()
        tg.cancel_scope.cancel()
    assert got == ["after"]


async def test_a_changed_applied_migration_is_one_clear_error(settings: Settings) -> None:
    first = db.migrations()[0]
    async with db.connection(settings.database) as conn:  # as if the file changed after it was applied
        await conn.execute("UPDATE schema_migrations SET checksum = 'f00' WHERE version = $1",
                           first.version)
    with pytest.raises(MigrationError) as info:
        await db.migrate(settings.database)
    message = str(info.value)
    assert first.path.name in message and "new migration" in message and "\n" not in message
    refused = await run_cli(settings, "db", "migrate")
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"error: migration {first.path.name} was changed")
    assert refused.stderr.count("\n") == 1, refused.stderr


async def test_a_cancelled_transaction_is_rolled_back_before_its_connection_returns(
    settings: Settings,
) -> None:
    """A cancel scope firing inside `transaction()` (a supervisor stopping a relay, a
    timeout) must not cut the rollback short: the connection would go back to the pool
    inside an open transaction."""
    database = await db.Database.open(settings.database, max_size=1)
    try:
        for _ in range(5):
            with anyio.move_on_after(0.05):
                async with database.transaction() as conn:
                    await conn.execute("SELECT pg_sleep(2)")
        assert database.leaks == 0
        async with database.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await database.close()
