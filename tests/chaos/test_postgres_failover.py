"""Postgres failing over under a running organisation (a primary + standby pair of the
test's own, tests/servers.py).

ECHO is given both servers the way a Patroni cluster is reached,
`postgresql://u:p@h:p1,h:p2/db?target_session_attrs=read-write`, with no Redis, so
real-time delivery rides on each process's LISTEN connection. The primary is
SIGKILLed and the standby promoted. The promise: agents go `degraded` and come back
`healthy` on the new primary by themselves (same pids, no restart); each LISTEN is
re-established there (a message sent afterwards arrives by NOTIFY, long before any
poll); every message committed before the failure is processed once by every agent;
a broadcast during the gap fails with one line; every task completes once.

And a server that turns read-only under a connection (a primary being demoted) is
unavailable: the write fails as `StoreUnavailable`, the connection is replaced, and
the retry lands on the writable server, never on the read-only one.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import asyncpg
import pytest

from echo import db as dbmod
from echo.bus import Message, Publisher
from echo.config import Settings
from echo.errors import StoreUnavailable
from echo.listener import Listener
from echo.org.health import read_health_file
from echo.work import NewTask, TaskQueue
from tests.chaos.conftest import (
    agent_pids,
    agent_restarts,
    assert_broadcast_refused,
    assert_each_role_processed_each_once,
    inbox_count,
)
from tests.conftest import make_settings, unavailable
from tests.helpers import ROLES, all_in, org_processes, run_cli, stop_org, wait_until
from tests.integration.work.test_workers import Workers
from tests.servers import PostgresPair, server_port, sql

pytestmark = pytest.mark.chaos

#: Polls so rare that, within the test's waits, only NOTIFY can deliver a message.
POLL_S = 30.0


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[PostgresPair]:
    """A primary and a synchronous standby of this test's own, destroyed afterwards."""
    servers = PostgresPair(tmp_path / "pair")
    try:
        await servers.start()
    except Exception as exc:  # any failure to build the pair is the skip reason
        await anyio.to_thread.run_sync(servers.destroy)
        unavailable(f"cannot start a Postgres primary and standby ({exc})")
    try:
        yield servers
    finally:
        await anyio.to_thread.run_sync(servers.destroy)


def pair_settings(pair: PostgresPair, namespace: str, tmp_path: Path, **extra: object) -> Settings:
    s = make_settings(pair.dsn, None, namespace, tmp_path / "state")
    return s.model_copy(update={"connect_timeout": 1.0, "command_timeout": 2.0, **extra})


def listening_everywhere(s: Settings) -> bool:
    """Every agent's heartbeat file says its LISTEN connection is up."""
    for role in ROLES:
        health = read_health_file(s, role, 5.0)
        if health is None or not health.details.get("listener_connected"):
            return False
    return True


async def test_failover_degrades_recovers_on_the_new_primary_and_loses_nothing(
    pair: PostgresPair, namespace: str, tmp_path: Path, agents_dir: Path
) -> None:
    s = pair_settings(pair, namespace, tmp_path, agents_dir=agents_dir, poll_interval=POLL_S)
    await dbmod.migrate(s.database)
    workers = Workers(s, tmp_path)
    sent: list[int] = []
    tasks: list[int] = []
    try:
        started = await run_cli(s, "up", "--detach", timeout=120)
        assert started.returncode == 0, started.stderr
        workers.start("--concurrency", "4", "--executor", "noop")
        await workers.ready(0, timeout=60)
        await wait_until(all_in(s, "healthy"), timeout=60, interval=0.1)
        pids, restarts = agent_pids(s, ROLES), agent_restarts(s, ROLES)

        database = await dbmod.Database.open(s.database, max_size=2)
        queue = TaskQueue(database)
        try:
            async with Publisher(s.bus, database) as pub:
                sent.extend((await pub.publish_many(
                    [Message.build(from_role="operator", subject=f"before {i}") for i in range(50)]
                )).db_ids)
            tasks.extend(t.task_id for t in await queue.enqueue_many(
                [NewTask(f"before {i}", task_type="noop") for i in range(50)]
                + [NewTask(f"running {i}", task_type="noop", payload={"sleep": 3}) for i in range(4)]))

            async def running() -> bool:
                return (await queue.counts())["running"] >= 4

            await wait_until(running, timeout=30, interval=0.05)  # some work is in flight
        finally:
            await database.close()

        await pair.kill_primary()
        await wait_until(all_in(s, "degraded"), timeout=60, interval=0.1)
        refused = await assert_broadcast_refused(s, "during the failover")
        assert pair.password not in refused

        await pair.promote()
        await wait_until(all_in(s, "healthy"), timeout=90, interval=0.1)
        await wait_until(lambda: listening_everywhere(s), timeout=60, interval=0.1)
        assert agent_pids(s, ROLES) == pids and agent_restarts(s, ROLES) == restarts

        database = await dbmod.Database.open(s.database, max_size=2)
        queue = TaskQueue(database)
        try:
            async with database.acquire() as conn:
                assert await server_port(conn) == pair.standby.port
                on_new = await conn.fetch(
                    "SELECT DISTINCT application_name FROM pg_stat_activity "
                    "WHERE application_name LIKE $1", f"echo-agent:{namespace}:%")
            assert {r["application_name"].rsplit(":", 1)[1] for r in on_new} == set(ROLES)
            # Sent now, delivered within seconds: by NOTIFY on the re-established LISTEN
            # connections, since no agent polls for another POLL_S * 10 seconds.
            async with Publisher(s.bus, database) as pub:
                sent.extend((await pub.publish_many(
                    [Message.build(from_role="operator", subject=f"after {i}") for i in range(50)]
                )).db_ids)

            async def processed() -> bool:
                return await inbox_count(database, sent) >= len(sent) * len(ROLES)

            await wait_until(processed, timeout=POLL_S / 2, interval=0.1)
            tasks.extend(t.task_id for t in await queue.enqueue_many(
                [NewTask(f"after {i}", task_type="noop") for i in range(50)]))

            async def all_done() -> bool:
                return (await queue.counts())["completed"] >= len(tasks)

            await wait_until(all_done, timeout=90, interval=0.1)
            await assert_each_role_processed_each_once(s, database, ROLES, sent)
            async with database.acquire() as conn:
                ghosts = await conn.fetchval(
                    "SELECT count(*) FROM messages WHERE subject = 'during the failover'")
                per_task = await conn.fetch(
                    "SELECT t.task_id, t.status, "
                    "count(a.*) FILTER (WHERE a.action = 'task.completed') AS n "
                    "FROM agent_tasks t LEFT JOIN agent_actions a "
                    "ON a.subject_type = 'task' AND a.subject_id = t.task_id::text "
                    "WHERE t.task_id = ANY($1) GROUP BY t.task_id, t.status", tasks)
            assert ghosts == 0
            assert len(per_task) == len(tasks)
            assert {(r["status"], r["n"]) for r in per_task} == {("completed", 1)}
            assert database.leaks == 0
        finally:
            await database.close()
        assert agent_pids(s, ROLES) == pids and agent_restarts(s, ROLES) == restarts
        workers.procs[0].send_signal(signal.SIGTERM)
        assert workers.procs[0].wait(timeout=30) == 0, workers.log(0)
    finally:
        workers.stop_all()
        stop_org(s)
    assert org_processes(s) == []


async def test_a_read_only_server_is_unavailable_and_its_connections_are_replaced(
    pair: PostgresPair, namespace: str, tmp_path: Path
) -> None:
    s = pair_settings(pair, namespace, tmp_path)
    await dbmod.migrate(s.database)
    database = await dbmod.Database.open(s.database, max_size=1)
    listener = Listener(s.database, keepalive=0.2, backoff_max=0.5)
    heard: list[str] = []
    heard_event = anyio.Event()

    def on_probe(payload: str) -> None:
        heard.append(payload)
        heard_event.set()

    await listener.listen("probe", on_probe)

    async def count_on(server_dsn: str) -> object:
        return await sql_in(server_dsn, namespace, "SELECT count(*) FROM messages")

    try:
        async with anyio.create_task_group() as tg:
            await tg.start(listener.run)
            async with Publisher(s.bus, database) as pub:
                await pub.publish(Message.build(from_role="operator", subject="on the primary"))
            async with database.acquire() as conn:
                assert await server_port(conn) == pair.primary.port

            # The primary is being demoted: read-only from now on (a reload reaches the
            # open sessions too), and nothing else is writable yet.
            await sql(pair.primary, "ALTER SYSTEM SET default_transaction_read_only = on")
            await sql(pair.primary, "SELECT pg_reload_conf()")
            # pg_reload_conf() only signals the postmaster, which then signals each
            # session; a busy machine can run the next statement first. The open session
            # (max_size=1: the publisher's) reads the file before its next command once
            # signalled, and the postmaster has by then, so fresh sessions read it too.
            async def read_only_now() -> bool:
                async with database.acquire() as conn:
                    return bool(await conn.fetchval("SHOW default_transaction_read_only") == "on")

            await wait_until(read_only_now, timeout=30, interval=0.02)
            for attempt in ("on the open connection (25006)", "on a fresh one (no writable host)"):
                with pytest.raises(StoreUnavailable) as info:
                    async with Publisher(s.bus, database) as pub:
                        await pub.publish(Message.build(from_role="operator", subject=attempt))
                assert pair.password not in str(info.value)
            await wait_until(lambda: not listener.connected, timeout=30, interval=0.02)

            await pair.promote()
            async with Publisher(s.bus, database) as pub:
                await pub.publish(Message.build(from_role="operator", subject="on the new primary"))
            async with database.acquire() as conn:
                assert await server_port(conn) == pair.standby.port
            assert await count_on(pair.primary.dsn) == 1  # nothing reached the read-only one
            assert await count_on(pair.standby.dsn) == 2

            # The LISTEN connection left the read-only server for the writable one too.
            await wait_until(lambda: listener.connected, timeout=30, interval=0.02)
            assert listener._conn is not None and await server_port(listener._conn) == pair.standby.port
            async with database.acquire() as conn:
                await conn.execute("SELECT pg_notify($1, 'hello')", f"{namespace}:probe")
            with anyio.fail_after(10):
                await heard_event.wait()
            assert heard == ["hello"]
            tg.cancel_scope.cancel()
    finally:
        await database.close()
    assert database.leaks == 0


async def sql_in(server_dsn: str, schema: str, query: str) -> object:
    """A count in the organisation's schema on one server, over its private socket."""
    conn = await asyncpg.connect(server_dsn, timeout=10, server_settings={"search_path": schema})
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()
