"""GenServer-style actors: one mailbox, one task, handlers run one message at a time.

Subclass `Actor` and override the callbacks you need::

    class Counter(Actor):
        def __init__(self, start: int) -> None:
            super().__init__(name="counter")
            self.value = start

        async def handle_call(self, request: Any) -> Any:
            if request == "get":
                return self.value
            raise ValueError(request)          # crashes the actor; the caller gets ActorExit

        async def handle_cast(self, message: Any) -> None:
            self.value += message

    counter = await Counter(0).start()         # returns once init() has finished
    counter.cast(5)
    assert await counter.call("get") == 5

Semantics (Elixir's, unless stated):

- ``init`` runs in the actor's task before `start()` returns; if it raises, `start()`
  raises `StartError` and ``terminate`` is not called.
- `call` waits for the value ``handle_call`` returns. After ``timeout`` seconds it
  raises `CallTimeout` in the caller; the request stays queued and is still handled
  (its reply is dropped). Calling an actor that is not alive raises `ActorNotAlive`
  at once; if the actor exits before replying the caller gets `ActorExit`.
- `cast` and `send` are fire and forget and are dropped if the actor is not alive.
  ``send`` messages, `Down` and `Exit` messages go to ``handle_info``.
- An exception in any handler crashes the actor: ``terminate(exc)`` runs, then the
  actor exits with the exception as its reason, which its supervisor, monitors and
  links receive. Nothing is swallowed.
- `stop(reason)` is handled ahead of queued messages, once the current handler
  returns: ``terminate(reason)`` runs and the actor exits with ``reason``. Messages
  still queued are dropped and their callers get `ActorExit`.

The mailbox is a deque with a single wake-up future, and a call's timeout expires the
reply future from a per-actor deadline queue rather than a cancel scope or a timer per
call. That keeps a round trip at the cost of a bare ``asyncio.Queue`` plus ``Future``
(see ``bench/runtime.py``), which the call path of every agent pays.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from echo.runtime._core import (
    Exit,
    ExitReason,
    MonitorRef,
    Process,
    demonitor,
    link,
    logger,
    monitor,
    unlink,
)
from echo.runtime._exceptions import (
    ActorExit,
    ActorNotAlive,
    CallTimeout,
    RuntimeFault,
    UnexpectedMessage,
)

_CAST: Any = object()
_INFO: Any = object()
_RUNNING: Any = object()

__all__ = ["Actor"]


class _Deadlines:
    """Timeouts for calls that share one timeout value, with at most one timer armed.

    Calls with the same timeout expire in the order they were made, so a FIFO of
    ``(deadline, reply, request)`` replaces one timer per call (a timer costs about a
    third of a round trip). Answered calls are dropped from the head as new ones
    arrive, and the whole queue is compacted whenever it doubles, so it stays as small
    as the number of calls actually pending.
    """

    __slots__ = ("entries", "limit", "loop", "target", "timeout", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, target: Actor, timeout: float) -> None:
        self.loop = loop
        self.target = target
        self.timeout = timeout
        self.entries: deque[tuple[float, asyncio.Future[Any], Any]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.limit = 64

    def add(self, reply: asyncio.Future[Any], request: Any) -> None:
        entries = self.entries
        while entries and entries[0][1].done():
            entries.popleft()
        entries.append((self.loop.time() + self.timeout, reply, request))
        if len(entries) > self.limit:
            self.entries = entries = deque(e for e in entries if not e[1].done())
            self.limit = max(64, 2 * len(entries))
        if self.timer is None:
            self.timer = self.loop.call_at(entries[0][0], self.expire)

    def expire(self) -> None:
        self.timer = None
        entries = self.entries
        now = self.loop.time()
        while entries and (entries[0][0] <= now or entries[0][1].done()):
            _, reply, request = entries.popleft()
            if not reply.done():
                reply.set_exception(CallTimeout(self.target, request, self.timeout))
        if entries:
            self.timer = self.loop.call_at(entries[0][0], self.expire)


class Actor(Process):
    """A GenServer: override ``init``, ``handle_call``, ``handle_cast``, ``handle_info``
    and ``terminate``. State lives in the instance's attributes.
    """

    trap_exits = False
    """When True, exits of linked processes arrive as `Exit` messages instead of
    killing this actor."""

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self._mailbox: deque[tuple[Any, Any]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._stop_reason: Any = _RUNNING
        self._deadlines: dict[float, _Deadlines] | None = None

    # -- callbacks ---------------------------------------------------------------------

    async def init(self) -> None:
        """Prepare state; the supervisor starts the next child only after this returns."""

    async def handle_call(self, request: Any) -> Any:
        """Return the reply to ``request``. The default crashes, as in Elixir."""
        raise UnexpectedMessage(self, "call", request)

    async def handle_cast(self, message: Any) -> None:
        """Handle a fire-and-forget message. The default crashes, as in Elixir."""
        raise UnexpectedMessage(self, "cast", message)

    async def handle_info(self, message: Any) -> None:
        """Handle `send` messages, `Down` and `Exit`. The default logs and drops them."""
        logger.warning("%r dropped an unexpected message: %r", self, message)

    async def terminate(self, reason: ExitReason) -> None:
        """Clean up after a stop or a crash (not after a kill or a failed init)."""

    # -- messaging ---------------------------------------------------------------------

    async def call(self, request: Any, timeout: float | None = 5.0) -> Any:  # noqa: ASYNC109
        """Send ``request`` and wait for the reply; ``timeout=None`` waits forever.

        Raises `CallTimeout`, `ActorNotAlive` or `ActorExit`.
        """
        task = self._task
        if task is None or self._dead:
            raise ActorNotAlive(self, self._reason)
        if asyncio.current_task() is task:
            raise RuntimeFault(f"{self!r} called itself, which can never be answered")
        loop = task.get_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._mailbox.append((request, reply))
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if timeout is not None:
            table = self._deadlines
            if table is None:
                table = self._deadlines = {}
            deadlines = table.get(timeout)
            if deadlines is None:
                deadlines = table[timeout] = _Deadlines(loop, self, timeout)
            deadlines.add(reply, request)
        return await reply

    def cast(self, message: Any) -> None:
        """Queue ``message`` for ``handle_cast``; dropped if the actor is not alive."""
        if self._task is not None and not self._dead:
            self._mailbox.append((message, _CAST))
            waiter = self._waiter
            if waiter is not None:
                self._waiter = None
                if not waiter.done():
                    waiter.set_result(None)

    def send(self, message: Any) -> None:
        """Queue ``message`` for ``handle_info``; dropped if the actor is not alive."""
        if self._task is not None and not self._dead:
            self._mailbox.append((message, _INFO))
            waiter = self._waiter
            if waiter is not None:
                self._waiter = None
                if not waiter.done():
                    waiter.set_result(None)

    def send_after(self, delay: float, message: Any) -> asyncio.TimerHandle:
        """`send` ``message`` after ``delay`` seconds; cancel the returned handle to stop it."""
        return asyncio.get_running_loop().call_later(delay, self.send, message)

    # -- monitors and links ------------------------------------------------------------

    def monitor(self, target: Process) -> MonitorRef:
        """Receive ``Down(ref, target, reason)`` in ``handle_info`` when ``target`` exits."""
        return monitor(target, self.send)

    def demonitor(self, ref: MonitorRef) -> None:
        """Stop watching; a `Down` already queued stays queued."""
        demonitor(ref)

    def link(self, other: Process) -> None:
        """Tie this actor's fate to ``other``'s (see `echo.runtime.link`)."""
        link(self, other)

    def unlink(self, other: Process) -> None:
        """Undo `link`."""
        unlink(self, other)

    # -- the process protocol ----------------------------------------------------------

    def _request_stop(self, reason: ExitReason) -> None:
        if self._stop_reason is _RUNNING:
            self._stop_reason = reason
            waiter = self._waiter
            if waiter is not None:
                self._waiter = None
                if not waiter.done():
                    waiter.set_result(None)

    def _exit_signal(self, sender: Process, reason: ExitReason) -> None:
        if self.trap_exits:
            self.send(Exit(sender, reason))
        else:
            super()._exit_signal(sender, reason)

    def _after_exit(self, reason: ExitReason) -> None:
        if self._deadlines:
            for deadlines in self._deadlines.values():
                if deadlines.timer is not None:
                    deadlines.timer.cancel()
                    deadlines.timer = None
        mailbox = self._mailbox
        while mailbox:
            _, tag = mailbox.popleft()
            if tag is not _CAST and tag is not _INFO and not tag.done():
                tag.set_exception(ActorExit(self, reason))

    async def _main(self) -> ExitReason:
        await self.init()
        self._ready()
        reason: ExitReason
        try:
            reason = await self._serve()
        except Exception as exc:
            reason = exc
        await self.terminate(reason)
        return reason

    async def _serve(self) -> ExitReason:
        mailbox = self._mailbox
        popleft = mailbox.popleft
        loop = asyncio.get_running_loop()
        while True:
            if self._stop_reason is not _RUNNING:
                stop_reason: ExitReason = self._stop_reason
                return stop_reason
            if not mailbox:
                waiter = self._waiter = loop.create_future()
                await waiter
                continue
            message, tag = popleft()
            if tag is _CAST:
                await self.handle_cast(message)
            elif tag is _INFO:
                await self.handle_info(message)
            else:
                try:
                    reply = await self.handle_call(message)
                except BaseException as exc:
                    if not tag.done():
                        crash = exc if isinstance(exc, Exception) else self._kill_reason
                        tag.set_exception(ActorExit(self, crash or exc))
                    raise
                if not tag.done():
                    tag.set_result(reply)
