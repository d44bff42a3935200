"""What every area of the client shares: its pool, its publisher, the migration guard.

`echo.org.client.Client` is one object users hold, its operations grouped by area
(client_messages, client_tasks, client_approvals, client_governor, client_workflows),
each a class over this base. The base opens the database pool on first use (so
`status` works with Postgres down) and the publisher on the first send, and closes
both on exit; every operation on a namespace that has not been migrated says so in
one line (`MigrationError`) through `_migrated`. Who is up (`live_roles`) is here
because asking a role and starting a workflow both refuse when nobody would answer
(`NoAgentsUp`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Self

from echo import db
from echo.bus import Message, Published, Publisher
from echo.config import Settings
from echo.errors import EchoError
from echo.org.repos import RepoService
from echo.org.roles import role_names
from echo.org.workflow import WorkflowStore
from echo.work import TaskQueue


class NoAgentsUp(EchoError):
    """A workflow needs running agents, and none is up."""


class ClientBase:
    """The connections of one organisation's client (`settings.namespace`)."""

    def __init__(self, settings: Settings, *, database: db.Database | None = None,
                 fence: str | None = None) -> None:
        """`fence` ('role/epoch/holder', `echo.org.leases.Lease.fence`): the pool this
        client opens writes as that role, so once the role's lease has passed on every
        write is refused (`LeaseLost`) and nothing is stored: what a Claude run of the
        role gets through MCP (echo.mcp). With `database`, that pool is used as given."""
        self.settings = settings
        self.fence = fence
        self._db = database
        self._owns_db = database is None
        self._publisher: Publisher | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the publisher (its announcements flushed) and the pool this client opened."""
        try:
            await self._stack.aclose()
        finally:
            self._publisher = None
            if self._owns_db and self._db is not None:
                await self._db.close()
                self._db = None

    # ------------------------------------------------------------ plumbing

    async def database(self) -> db.Database:
        """The client's pool, opened on first use."""
        if self._db is None:
            self._db = await db.Database.open(self.settings.database, min_size=0, max_size=2,
                                              fence=self.fence)
        return self._db

    async def open_publisher(self) -> None:
        """Open the publisher now, in the calling task. Its background tasks belong to the
        task that opens it, so a server (the console) calls this at start, not from
        inside one request; a command line client lets the first send open it."""
        if self._publisher is None:
            publisher = Publisher(self.settings.bus, await self.database())
            self._publisher = await self._stack.enter_async_context(publisher)

    async def _publish(self, message: Message, *, confirm: bool = False) -> Published:
        await self.open_publisher()
        assert self._publisher is not None
        return await self._publisher.publish(message, confirm=confirm)

    @contextlib.contextmanager
    def _migrated(self) -> Iterator[None]:
        """One line, not a traceback, on a namespace that has not been migrated."""
        with db.schema_guard(self.settings.namespace):
            yield

    @contextlib.asynccontextmanager
    async def _workflows(self) -> AsyncIterator[WorkflowStore]:
        with self._migrated():
            yield WorkflowStore(await self.database())

    @contextlib.asynccontextmanager
    async def _queue(self) -> AsyncIterator[TaskQueue]:
        with self._migrated():
            yield TaskQueue(await self.database(), max_task_bytes=self.settings.work.max_task_bytes)

    @contextlib.asynccontextmanager
    async def repos(self) -> AsyncIterator[RepoService]:
        """Repositories and their workspaces (`echo.org.repos`): add, list, show, remove,
        the merge queue, gc, a task's diff."""
        with self._migrated():
            yield RepoService(self.settings, await self.database())

    async def live_roles(self) -> list[str]:
        """The known roles whose agent is up now (a fresh heartbeat)."""
        known = role_names(self.settings.agents_dir)
        async with self._workflows() as store:
            up = await store.up_roles()
        return [r for r in known if r in up]
