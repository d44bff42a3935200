"""The one LISTEN connection of a process, kept alive across database failures.

Real-time delivery without Redis, and the work queue's wake-ups, both ride on
Postgres NOTIFY. A process holds exactly one connection for LISTEN (it cannot be
pooled: a pooled connection forgets its LISTENs on release). When the database
restarts or fails over, the connection dies; `Listener.run` reconnects with
capped backoff, re-issues every LISTEN and then calls the `on_reconnect`
callbacks, because a NOTIFY sent while nobody listened is gone for good and the
consumers must catch up from the tables.

Channel names are namespaced: `listen("messages", ...)` listens on
`<namespace>:messages`, which is what `notify_channel("messages")` names in SQL.

The listener outlives the components that use it (a subscriber or a work pool is
restarted in process by its supervisor; the listener is not), so `listen` and
`on_reconnect` return a `Registration` that the component closes when it stops:
otherwise every restart would add handlers that keep the old component alive.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import anyio
import asyncpg
from anyio.abc import TaskStatus

from echo import db
from echo.degradation import Condition
from echo.errors import StoreUnavailable
from echo.runtime import Backoff
from echo.runtime.ticks import until_tick
from echo.slices import BusSettings, DatabaseSettings

log = logging.getLogger(__name__)

Handler = Callable[[str], None]


class Registration:
    """A handler registered on a `Listener`; `close()` (or leaving ``with``) removes it.

    Closing twice is harmless. A component registers when it starts and closes in its
    ``finally``, so that a restarted component replaces its handlers rather than
    adding to them.
    """

    __slots__ = ("_undo",)

    def __init__(self, undo: Callable[[], None]) -> None:
        self._undo: Callable[[], None] | None = undo

    def close(self) -> None:
        undo, self._undo = self._undo, None
        if undo is not None:
            undo()

    def __enter__(self) -> Registration:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def notify_channel(settings: DatabaseSettings | BusSettings, name: str) -> str:
    """The NOTIFY channel for `name` in this organisation."""
    return f"{settings.namespace}:{name}"


class Listener:
    """Holds the process's LISTEN connection and dispatches payloads to handlers.

    Handlers are plain callables run on the event loop: they must not block
    (set an event, or `send_nowait` into a memory stream).
    """

    def __init__(
        self,
        settings: DatabaseSettings,
        *,
        keepalive: float = 5.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        self.settings = settings
        self.keepalive = keepalive
        self.backoff = Backoff(initial=backoff_initial, max=backoff_max)
        self._handlers: dict[str, list[Handler]] = {}
        self._reconnect_callbacks: list[Callable[[], None]] = []
        self._conn: asyncpg.Connection | None = None
        self._lost = anyio.Event()
        self.connected = False
        self.connects = 0
        #: Pushed to the agent's HealthMonitor once it has one (`condition.reporter`).
        self.condition = Condition("listener", None, log)

    @property
    def last_error(self) -> str | None:
        return self.condition.last_error

    @property
    def registered(self) -> int:
        """How many handlers and reconnect callbacks are registered now."""
        return sum(len(h) for h in self._handlers.values()) + len(self._reconnect_callbacks)

    def on_reconnect(self, callback: Callable[[], None]) -> Registration:
        """Call `callback` after every (re)connection: time to catch up. Close the
        returned `Registration` to stop."""
        self._reconnect_callbacks.append(callback)

        def undo() -> None:
            with contextlib.suppress(ValueError):
                self._reconnect_callbacks.remove(callback)

        return Registration(undo)

    async def listen(self, name: str, handler: Handler) -> Registration:
        """Deliver NOTIFY payloads of `<namespace>:<name>` to `handler` from now on,
        until the returned `Registration` is closed.

        Closing removes the handler; the connection keeps its LISTEN on the channel
        until it is next re-established (a payload nobody handles is dropped)."""
        channel = notify_channel(self.settings, name)
        first = channel not in self._handlers
        self._handlers.setdefault(channel, []).append(handler)
        if first and self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(StoreUnavailable), db.translate_errors(self.settings, "listen"):
                await self._conn.add_listener(channel, self._dispatch)

        def undo() -> None:
            handlers = self._handlers.get(channel)
            if handlers is not None:
                with contextlib.suppress(ValueError):
                    handlers.remove(handler)
                if not handlers:
                    del self._handlers[channel]

        return Registration(undo)

    def _dispatch(self, _conn: Any, _pid: int, channel: str, payload: object) -> None:
        for handler in tuple(self._handlers.get(channel, ())):
            try:
                handler(str(payload))
            except Exception:
                log.exception("NOTIFY handler for %s failed; payload dropped", channel)

    def _on_terminate(self, _conn: object) -> None:
        self._lost.set()

    async def _connect(self) -> None:
        conn = await db.connect(self.settings)
        try:
            with db.translate_errors(self.settings, "listen"):
                if await db.read_only(conn):
                    raise StoreUnavailable(
                        f"database {db.describe(self.settings)} is read-only (a standby or a "
                        "demoted primary): NOTIFY is sent on the primary, so LISTEN waits for it"
                    )
                for channel in self._handlers:
                    await conn.add_listener(channel, self._dispatch)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._on_terminate)
        self._conn = conn
        self._lost = anyio.Event()
        self.connected = True
        self.connects += 1
        self.condition.ok()
        for callback in tuple(self._reconnect_callbacks):
            callback()

    async def _watch(self) -> None:
        """Return when the connection is gone, or its server turned read-only (demoted:
        the primary, where NOTIFY is sent, is elsewhere now); a keepalive query notices
        both, and silent deaths."""
        assert self._conn is not None
        while True:
            with anyio.move_on_after(until_tick(self.keepalive)):  # with the other timers
                await self._lost.wait()
                return
            try:
                with anyio.fail_after(self.keepalive), db.translate_errors(self.settings, "listen"):
                    if await db.read_only(self._conn):
                        log.warning("LISTEN connection's server is read-only now")
                        return
            except (StoreUnavailable, TimeoutError):
                return

    async def _drop(self) -> None:
        self.connected = False
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(StoreUnavailable, RuntimeError), \
                    db.translate_errors(self.settings, "close"):
                conn.terminate()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Keep the connection up until cancelled. Reports started after the first attempt,
        connected or not: a process must be able to start while the database is down."""
        retry = self.backoff.attempts()
        started = False
        try:
            while True:
                try:
                    await self._connect()
                    retry.reset()
                except StoreUnavailable as exc:
                    self.condition.trouble(f"LISTEN connection unavailable: {exc}")
                if not started:
                    task_status.started()
                    started = True
                if self._conn is not None:
                    await self._watch()
                    log.warning("LISTEN connection lost; reconnecting")
                    await self._drop()
                    continue
                await retry.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await self._drop()
