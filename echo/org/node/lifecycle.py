"""What ECHO starts, ECHO stops: the embedded Postgres of a state directory.

With no `ECHO_DATABASE_URL`, the first command that needs a database starts a real
Postgres in the state directory (echo.embedded) and every later process reuses it.
This module decides when it stops: when the organisation of that state directory
is not running and no other client is connected. `echoctl down` asks for that
after the agents stopped; every other `echoctl` command that started the server
asks for it when it ends (`release_embedded`), so a `broadcast` or `workflow show`
run against a stopped organisation does not leave a server behind (and `status`
does not start one just to say that nothing runs). `echoctl db stop` stops it
whoever is connected (never under a running organisation), and `--purge` deletes
its data.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from echo import db
from echo.config import Settings
from echo.embedded import EmbeddedPostgres
from echo.errors import EchoError, StoreRejected, StoreUnavailable
from echo.org.node.state import running_org
from echo.slices import DatabaseSettings

log = logging.getLogger(__name__)
Q = db.load_queries("server")

#: How long `down` waits for the agents' connections to go (a backend exits a moment
#: after its client closed) before it decides that someone else uses the server.
CLIENTS_GRACE = 5.0


@dataclass
class ServerState:
    """The embedded server of one state directory, as `echoctl db status` shows it."""

    data_dir: Path
    socket_dir: Path
    port: int
    pid: int | None
    exists: bool
    link: Path
    clients: list[dict[str, Any]] = field(default_factory=list)
    organisation_pid: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir),
            "state_dir_link": str(self.link) if self.link != self.data_dir.parent else None,
            "socket_dir": str(self.socket_dir),
            "port": self.port,
            "pid": self.pid,
            "running": self.pid is not None,
            "exists": self.exists,
            "clients": self.clients,
            "organisation_pid": self.organisation_pid,
        }


def embedded(settings: DatabaseSettings) -> EmbeddedPostgres | None:
    """The embedded server of these settings, or None when a database URL is configured."""
    return None if settings.database_url else db.embedded_server(settings)


async def clients(server: EmbeddedPostgres) -> list[dict[str, Any]]:
    """Who is connected to a running embedded server (never starts it)."""
    if server.running_pid() is None:
        return []
    async with db.direct(server.dsn, "list the embedded server's clients") as conn:
        rows = await conn.fetch(Q["clients"])
    return [
        {"pid": r["pid"], "application": r["application_name"], "database": r["datname"],
         "since": r["backend_start"].isoformat()}
        for r in rows
    ]


async def database_status(settings: Settings) -> dict[str, object]:
    """Which database is in use (password hidden), its server version and the schema
    version against the latest migration: what `echoctl db status` prints."""
    async with db.connection(settings.database) as conn:
        with db.translate_errors(settings.database, "read the database status"):
            version_of_server = await conn.fetchval(Q["version"])
            version = await db.schema_version(conn)
    latest = max((m.version for m in db.migrations()), default=0)
    return {
        "database": db.describe(settings.database),
        "embedded": settings.database_url is None,
        "namespace": settings.namespace,
        "server_version": version_of_server,
        "schema_version": version,
        "latest_migration": latest,
        "up_to_date": version >= latest,
    }


async def server_state(settings: Settings) -> ServerState | None:
    """What runs where for this state directory, or None when a URL is configured."""
    server = embedded(settings.database)
    if server is None:
        return None
    org = running_org(settings)
    state = ServerState(
        data_dir=server.data_dir,
        socket_dir=server.socket_dir,
        port=server.port,
        pid=server.running_pid(),
        exists=server.exists(),
        link=server.link,
        organisation_pid=org.pid if org else None,
    )
    with contextlib.suppress(StoreUnavailable, StoreRejected):
        state.clients = await clients(server)
    return state


async def _clients_gone(server: EmbeddedPostgres, within: float) -> list[dict[str, Any]]:
    """The clients still connected after waiting up to `within` s for them to leave."""
    left: list[dict[str, Any]] = []
    with anyio.move_on_after(within):
        while True:
            try:
                left = await clients(server)
            except (StoreUnavailable, StoreRejected) as exc:
                log.warning("cannot list the embedded server's clients: %s", exc)
                return []
            if not left:
                return left
            await anyio.sleep(0.1)
    return left


def running_pid(settings: Settings) -> int | None:
    """The embedded server's postmaster pid, if these settings use one and it runs."""
    server = embedded(settings.database)
    return server.running_pid() if server is not None else None


async def stop_if_unused(
    settings: DatabaseSettings, *, grace: float = CLIENTS_GRACE, was: int | None = None
) -> str | None:
    """Stop the embedded server unless its organisation runs or a client is connected.

    Returns the line to show the user, or None when there was nothing to stop. `was`
    is the server's pid before the organisation stopped: the organisation's process
    stops the server itself on its way out, and the line then says so."""
    server = embedded(settings)
    if server is None:
        return None
    pid = server.running_pid()
    if pid is None and was is not None:
        return f"stopped the embedded Postgres (pid {was}, data in {server.data_dir})"
    if pid is None or running_org(settings) is not None:
        return None
    left = await _clients_gone(server, grace)
    if left:
        names = ", ".join(sorted({c["application"] for c in left}))
        return (
            f"embedded Postgres (pid {pid}) left running: {len(left)} other connection(s) "
            f"use it ({names}); `echoctl db stop` stops it anyway"
        )
    await anyio.to_thread.run_sync(server.stop)
    return f"stopped the embedded Postgres (pid {pid}, data in {server.data_dir})"


async def stop(settings: Settings, *, purge: bool = False) -> list[str]:
    """`echoctl db stop`: stop the embedded server whoever is connected (`fast`: their
    transactions roll back), and with `purge` delete its data. Refused while the
    organisation of this state directory runs: `echoctl down` stops both."""
    server = embedded(settings.database)
    if server is None:
        raise EchoError(
            "no embedded Postgres: ECHO_DATABASE_URL names the database, which ECHO does not manage"
        )
    org = running_org(settings)
    if org is not None:
        raise EchoError(
            f"the organisation (pid {org.pid}) runs on this server; `echoctl down` stops both"
        )
    lines = []
    pid = server.running_pid()
    if pid is not None:
        await anyio.to_thread.run_sync(server.stop)
        if server.running_pid() is not None:
            raise EchoError(f"the embedded Postgres (pid {pid}) did not stop; see {server.log_file}")
        lines.append(f"stopped the embedded Postgres (pid {pid}, data in {server.data_dir})")
    else:
        lines.append(f"the embedded Postgres of {settings.state_dir} is not running")
    if purge:
        existed = server.exists() or server.root.exists()
        server.remove_files()
        lines.append(f"removed {server.root}" if existed else f"no data at {server.root}")
    return lines


def release_embedded() -> None:
    """After a CLI command: stop each embedded server it started that its organisation
    does not run on and no one else uses (quietly: the command's output is what counts).
    A server the command found running is left as it was."""
    for settings in db.embedded_started():

        async def one(s: DatabaseSettings = settings) -> str | None:
            return await stop_if_unused(s)

        try:
            line = anyio.run(one)
        # Never turn a command's result into a failure here. Database.acquire has already
        # translated driver errors into EchoError; OSError is a pg_ctl that cannot start.
        except (EchoError, OSError) as exc:
            log.warning("could not stop the embedded Postgres: %s", exc)
            continue
        if line:
            log.info("%s", line)
