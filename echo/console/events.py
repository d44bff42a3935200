"""Live events for every browser from one LISTEN connection: the `EventHub`.

However many clients follow `/api/v1/events`, a console process holds ONE LISTEN
connection (`echo.listener.Listener`, re-established after a failover) and ONE
reader of the organisation's event feed (`echo.org.feed`): a NOTIFY on
`<namespace>:events` wakes the reader, which reads the audit rows after its cursor
once and hands each event to every client's bounded queue. A client too slow to
keep its queue from filling is disconnected; its browser reconnects at once with
`Last-Event-ID` and loses nothing.

Each SSE frame's `id` is a resume cursor (never past an event the client has not
been sent): on reconnection the hub replays the feed after it from Postgres, then
goes on live, so events between two connections are not lost. A replay can repeat
an event or two; the frame's `seq` (the audit id) lets the page drop repeats.

Agent processes (state, pid, restarts, current work) also change where no audit row
is written (the organisation's record of a restart), so the hub polls the
organisation's status once a second, for all clients together, and sends an
`agents` event (the whole status) when something a person would see has changed,
else a small `heartbeats` event when only heartbeats moved: each agent's last
heartbeat and its age as the console measured it at that poll. The page shows that
age plus the time since the frame arrived (its own monotonic clock), so what it
shows tracks the real last heartbeat without comparing the browser's wall clock
with the server's, and an agent whose heartbeats stop is seen to age.

What each agent's Claude run is doing now (its latest run event) is read on the same
poll and sent as a `doing` event (one line per agent) when it changed: run events are
written several times a second and send no NOTIFY. A run's start and end are audit
rows (`run.started`, `run.ended`, migration 026), so they arrive as `run` events.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from typing import Any

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from echo import db
from echo.config import Settings
from echo.console.data import ConsoleData
from echo.errors import EchoError
from echo.listener import Listener
from echo.org.feed import Event, Feed, FeedCursor
from echo.runtime import Backoff

log = logging.getLogger(__name__)

#: At most this many events are replayed to a reconnecting client.
REPLAY_LIMIT = 10_000
KEEPALIVE = 15.0

Frame = tuple[int | None, bytes]  # (the event's seq, if any; the SSE frame, encoded once)


def frame(name: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    """One SSE frame."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, default=str, separators=(',', ':'))}\n\n".encode()


def event_name(event: Event) -> str:
    """`message`, `task`, `run`, `workflow`, `decision` or `agent`: what the page updates."""
    return event.subject_type


def _visible(status: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What of an agent a person sees change (not its heartbeat's age)."""
    return [
        (a.get("role"), a.get("state"), a.get("pid"), a.get("restarts"), a.get("running_tasks"),
         a.get("host"), a.get("reason"))
        for a in status.get("agents", [])
    ]


def _beats(status: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(a.get("role"), a.get("pid"), a.get("last_heartbeat")) for a in status.get("agents", [])]


def heartbeats(status: dict[str, Any]) -> dict[str, Any]:
    """The `heartbeats` event: what of each agent moves with every beat."""
    return {"agents": [{k: a.get(k) for k in ("role", "last_heartbeat", "heartbeat_age")}
                       for a in status.get("agents", [])]}


def doing_lines(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The `doing` event: one line per agent ("cto: Edit src/api.py, turn 3, $0.12"),
    the latest event of the role's running Claude tasks (`tasks` counts them; a task of
    no role is its own line), ordered by agent."""
    latest: dict[str, dict[str, Any]] = {}
    count: dict[str, int] = {}
    for row in rows:
        agent = row.get("role") or f"task {row['task_id']}"
        count[agent] = count.get(agent, 0) + 1
        seen = latest.get(agent)
        if seen is None or _when(row) > _when(seen):
            latest[agent] = row
    return {"agents": [
        {"agent": agent, "role": row.get("role"), "task_id": row["task_id"],
         "attempt": row.get("attempt"), "kind": row.get("kind"), "turn": row.get("turn"),
         "cost_usd": row.get("cost_usd"), "summary": row.get("summary"), "line": row.get("line"),
         "at": row.get("at"), "tasks": count[agent]}
        for agent, row in sorted(latest.items())]}


def _when(row: dict[str, Any]) -> tuple[datetime, int]:
    at = row.get("at")
    when = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
    return when, int(row["task_id"])


class EventHub:
    """The console's one LISTEN connection and feed reader, fanned out to clients."""

    def __init__(
        self,
        settings: Settings,
        database: db.Database,
        data: ConsoleData,
        *,
        status_interval: float = 1.0,
        gap_wait: float = 5.0,
        client_buffer: int = 2000,
    ) -> None:
        self.settings = settings
        self.db = database
        self.data = data
        self.status_interval = status_interval
        self.gap_wait = gap_wait
        self.client_buffer = client_buffer
        self.listener = Listener(settings.database)
        self.feed: Feed | None = None
        self.status: dict[str, Any] | None = None
        self.doing: dict[str, Any] | None = None  # the last `doing` event sent
        self.status_at = 0.0
        self.database_ok = False
        self.last_error: str | None = None
        self.observers: list[Callable[[Event], None]] = []
        self._clients: set[MemoryObjectSendStream[Frame]] = set()
        self._wake = anyio.Event()
        self.reads = 0

    # ---------------------------------------------------------------- clients
    @property
    def clients(self) -> int:
        return len(self._clients)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[MemoryObjectReceiveStream[Frame]]:
        """A queue of every frame from now on, until the block ends."""
        send, receive = anyio.create_memory_object_stream[Frame](self.client_buffer)
        self._clients.add(send)
        try:
            with receive:
                yield receive
        finally:
            self._clients.discard(send)
            send.close()

    def _broadcast(self, item: Frame) -> None:
        for client in list(self._clients):
            try:
                client.send_nowait(item)
            except anyio.WouldBlock:  # too slow: drop it, its browser resumes by id
                log.warning("an event stream client fell %d events behind; disconnecting it",
                            self.client_buffer)
                self._clients.discard(client)
                client.close()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._clients.discard(client)

    @property
    def position(self) -> int:
        """Where a client that has every event sent so far resumes from."""
        return self.feed.cursor.settled if self.feed else 0

    async def replay(self, after: int) -> list[Frame]:
        """The events after `after`, from Postgres, for a client that reconnects."""
        start = max(after, (self.feed.cursor.high if self.feed else after) - REPLAY_LIMIT)
        feed = Feed(self.db, FeedCursor(start, gap_wait=0.0))
        return [(e.id, frame(event_name(e), e.to_json(), e.id)) for e in await feed.read()]

    # ---------------------------------------------------------------- running
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Keep the LISTEN connection, the reader and the status poll going until cancelled."""
        await self.listener.listen("events", lambda _payload: self._wake.set())
        self.listener.on_reconnect(self._wake.set)  # NOTIFYs sent while away are gone: read
        async with anyio.create_task_group() as tg:
            await tg.start(self.listener.run)
            tg.start_soon(self._read_loop)
            tg.start_soon(self._status_loop)
            task_status.started()

    async def _read_loop(self) -> None:
        retry = Backoff(initial=0.2, max=5.0).attempts()
        while True:
            try:
                if self.feed is None:
                    self.feed = await Feed.from_now(self.db, gap_wait=self.gap_wait)
                events = await self.feed.read()
                self.reads += 1
                retry.reset()
            except EchoError as exc:  # StoreUnavailable: keep serving, read again later
                self.last_error = str(exc)
                self.database_ok = False
                await retry.wait()
                continue
            settled = self.feed.cursor.settled
            for event in events:
                for observe in self.observers:
                    observe(event)
                self._broadcast((event.id, frame(event_name(event), event.to_json(), min(event.id, settled))))
            # Gaps are read again until they fill or expire; otherwise wait for a NOTIFY.
            with anyio.move_on_after(0.5 if self.feed.cursor.gaps else 30.0):
                await self._wake.wait()
            self._wake = anyio.Event()

    async def refresh_status(self, *, remote: bool = True) -> dict[str, Any]:
        status = await self.data.status(remote=remote)
        before = self.status
        self.status, self.status_at = status, time.monotonic()
        if before is None or _visible(status) != _visible(before):
            self._broadcast((None, frame("agents", status)))
        elif _beats(status) != _beats(before):
            self._broadcast((None, frame("heartbeats", heartbeats(status))))
        return status

    async def refresh_doing(self) -> dict[str, Any]:
        """What each agent's Claude run is doing now; a `doing` event when it changed."""
        doing = doing_lines(await self.data.doing_now())
        if doing != self.doing:
            self.doing = doing
            self._broadcast((None, frame("doing", doing)))
        return doing

    async def current_status(self) -> dict[str, Any]:
        """The status the poll read last (at most two intervals old), else a fresh one."""
        if self.status is not None and time.monotonic() - self.status_at < 2 * self.status_interval:
            return self.status
        return await self.refresh_status()

    async def _status_loop(self) -> None:
        while True:
            try:
                await self.refresh_status()
            except Exception:  # the poll must never take the console down
                log.exception("could not read the organisation's status")
            # The runs' events send no NOTIFY (they are written several times a second
            # per run): what each agent does now is read on this same poll.
            if self._clients:  # nobody watching: nothing to read
                try:
                    await self.refresh_doing()
                except EchoError:  # the database is away: the status says so
                    pass
                except Exception:  # as the status: the poll must never take the console down
                    log.exception("could not read what the runs are doing")
            else:
                self.doing = None
            await anyio.sleep(self.status_interval)

    # ---------------------------------------------------------------- one client
    async def stream(self, last_event_id: int | None) -> AsyncIterator[bytes]:
        """The SSE byte stream of one client: a status snapshot, any replay, then live."""
        with self.subscribe() as inbox:
            yield b"retry: 1000\n\n"
            if self.status is not None:
                yield frame("agents", self.status)
            if self.doing is not None:
                yield frame("doing", self.doing)
            sent: set[int] = set()
            floor = last_event_id if last_event_id is not None else -1
            if last_event_id is not None:
                for seq, data in await self.replay(last_event_id):
                    if seq is not None:
                        sent.add(seq)
                    yield data
            while True:
                with anyio.move_on_after(KEEPALIVE) as idle:
                    try:
                        seq, data = await inbox.receive()
                    except anyio.EndOfStream:
                        return  # dropped for being slow: the browser reconnects
                if idle.cancelled_caught:
                    yield b": keepalive\n\n"
                    continue
                if seq is not None and (seq <= floor or seq in sent):
                    continue
                yield data
