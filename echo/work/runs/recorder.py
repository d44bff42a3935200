"""The recorder: a run's session, events and transcript, written while it streams.

The watchdog hands each `RunEvent` to `add` (synchronous, never blocks the reader);
`run` writes them in small batches (every `interval` seconds at most), records the
session at `init`, and mirrors the transcript after each batch. Everything is written
under the attempt's guard: once a write says the task is no longer ours, the recorder
writes nothing more (`lost`).

Bounded: at most `limit` events an attempt (the last place is kept for the `result`);
past it events are counted in `dropped`, not stored. A database that does not answer
never fails the run: events wait in memory (within the same bound) for the next batch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
from anyio.abc import TaskStatus

from echo.errors import StoreRejected, StoreUnavailable
from echo.work.runs.sessions import TranscriptMirror
from echo.work.runs.store import RunStore
from echo.work.runs.stream import RunEvent
from echo.work.tasks import Task

log = logging.getLogger(__name__)


class RunRecorder:
    def __init__(self, store: RunStore, task: Task, *, config_dir: Path, cwd: str | Path,
                 limit: int = 2000, resumed_attempt: int | None = None,
                 interval: float = 0.2) -> None:
        self.store, self.task = store, task
        self.cwd = str(Path(cwd).resolve())
        self.limit = max(limit, 2)
        self.resumed_attempt = resumed_attempt
        self.interval = interval
        self.mirror = TranscriptMirror(store, task, config_dir, cwd)
        self.session_id: str | None = None
        self.lost = False
        self.kept = 0      # events accepted (stored or waiting)
        self.dropped = 0   # events past the bound
        self.written = 0   # events stored
        self._pending: list[RunEvent] = []
        self._session_recorded = False
        self._wake = anyio.Event()
        self._closed = False
        self._flushing = anyio.Lock()  # `run`'s batch and `close`'s last one never overlap

    def add(self, event: RunEvent) -> None:
        if event.session_id:
            self.session_id = event.session_id
        if (self.kept >= self.limit - 1 and event.kind != "result") or self.kept >= self.limit:
            self.dropped += 1
            return
        self.kept += 1
        self._pending.append(event)
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Write batches until cancelled; `close` writes the rest."""
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await anyio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> None:
        """Write what waits: the session, the events, the transcript's new lines."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        if self.lost:
            self._pending.clear()
            return
        try:
            if self.session_id and not self._session_recorded:
                if not await self.store.record_session(self.task, self.session_id, self.cwd,
                                                       self.resumed_attempt):
                    return self._lose()
                self._session_recorded = True
                self.mirror.session_id = self.session_id
            batch = list(self._pending)
            if batch:
                if not await self.store.append_events(self.task, self.written + 1, batch):
                    return self._lose()
                del self._pending[:len(batch)]
                self.written += len(batch)
            if not await self.mirror.sync():
                return self._lose()
        except StoreUnavailable as exc:
            log.warning("task %s: run events wait for the database (%s)", self.task.task_id, exc)
        except StoreRejected as exc:
            log.error("task %s: run events refused (%s); dropped", self.task.task_id, exc)
            self._pending.clear()

    def _lose(self) -> None:
        log.warning("task %s attempt %s is no longer ours; its run events are not written",
                    self.task.task_id, self.task.attempt)
        self.lost = True
        self._pending.clear()

    async def close(self, within: float = 10.0) -> None:
        """The last batch and the transcript's last lines (the CLI writes them at exit)."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(within):
            await self.flush()
