"""The transport interface: what a publisher announces with and a subscriber listens on.

`Transport` publishes `Notice`s and opens `Subscription`s; a `Subscription` yields what
came off the wire (`Received`) and tells its `on_connect` callbacks after every
(re)connection and every dropped notification, both meaning "catch up from Postgres".
The implementations are `echo.bus.transport.redis` and `echo.bus.transport.notify`.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from echo.bus.wire import Notice
from echo.db import Connection

#: How many notifications a subscription holds unread.
BUFFER = 10_000


@dataclass(frozen=True, slots=True)
class Received:
    """One notification off the wire: its logical channel and the raw payload."""

    channel: str
    data: bytes | str


class Subscription:
    """Notifications for a set of channels. Iterate it; it reconnects on its own.

    `on_connect` callbacks run after every (re)connection and after any
    notification had to be dropped: both mean "catch up from Postgres".
    """

    def __init__(
        self, receive: MemoryObjectReceiveStream[Received], is_connected: Callable[[], bool]
    ) -> None:
        self._receive = receive
        self._is_connected = is_connected
        self._callbacks: list[Callable[[], None]] = []
        self.connects = 0
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._is_connected()

    def on_connect(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every (re)connection; at once if connected already."""
        self._callbacks.append(callback)
        if self.connected:
            callback()

    def _signal(self) -> None:
        for callback in self._callbacks:
            callback()

    def __aiter__(self) -> AsyncIterator[Received]:
        return self._receive.__aiter__()


@contextlib.asynccontextmanager
async def background() -> AsyncIterator[TaskGroup]:
    """A task group for helper tasks that are cancelled when the body ends. An error
    of the body propagates as itself, not wrapped in an exception group."""
    error: BaseException | None = None
    async with anyio.create_task_group() as tg:
        try:
            yield tg
        except BaseException as exc:  # re-raised below, unwrapped
            error = exc
        tg.cancel_scope.cancel()
    if error is not None:
        raise error


class Transport(abc.ABC):
    """Publishes notices and opens subscriptions. One per process is enough."""

    name: str = "transport"
    #: True when notices must be published inside the inserting transaction.
    in_transaction: bool = False
    #: True when notices carry their messages, signed (`Notice.encode(key)`), and
    #: `subscribe_all` sees every one of them.
    carries_messages: bool = False
    #: The component under which a subscriber reports its subscription as degraded
    #: while it is down; None where another component already does (NOTIFY rides on
    #: the Listener, which reports itself).
    component: str | None = None

    async def publish(self, notices: Sequence[Notice], *, key: bytes | None = None) -> int:
        """Announce `notices`; return how many receivers were reached (0 if unknown).
        Raises `TransportUnavailable` when the transport is down."""
        return sum(await self.publish_counts(notices, key=key))

    @abc.abstractmethod
    async def publish_counts(
        self, notices: Sequence[Notice], *, key: bytes | None = None
    ) -> list[int]:
        """Announce `notices` in order; how many receivers each reached (0 if unknown).
        With `key` (and `carries_messages`), notices that can be are signed and carry
        their message. Raises `TransportUnavailable` when the transport is down."""

    async def publish_in(
        self, conn: Connection, notices: Sequence[Notice], *, key: bytes | None = None
    ) -> int:
        """Announce inside the caller's transaction (only for `in_transaction` transports)."""
        raise TypeError(f"{self.name} does not publish inside a transaction; check in_transaction first")

    @abc.abstractmethod
    def subscribe(
        self, channels: Sequence[str], *, patterns: Sequence[str] = ()
    ) -> contextlib.AbstractAsyncContextManager[Subscription]:
        """A `Subscription` to logical `channels` (and glob `patterns`, Redis only)."""

    @abc.abstractmethod
    def subscribe_all(self) -> contextlib.AbstractAsyncContextManager[Subscription]:
        """A `Subscription` that sees the signed notice of every message of the
        namespace (what a subscriber that follows the chain needs)."""

    async def prepare(self) -> None:  # noqa: B027 - optional hook
        """Read from the database what announcing needs (Redis: the organisation's id),
        once. A caller that announces while it holds a connection of a small pool (the
        outbox relay, inside its transaction) calls this first, outside it."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release the transport's connections."""
