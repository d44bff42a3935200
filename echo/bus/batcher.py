"""Group commit: concurrent callers combined into rounds, one write per round.

While one round is being written, later callers queue; when it is done, the first
of them leads the next round, which takes *every* job queued by then. So under load
a round costs one round trip for many callers, and an idle caller is written at once.
This is the publisher's hot path (one INSERT, one transaction, one hold of the
ordering lock per round), kept free of Postgres so that it can be tested alone.

    batcher = GroupCommit(write)          # write(jobs) settles each job (or raises)
    result = await batcher.submit(items)  # waits for its round, returns its outcome

`write(jobs)` must settle every job it can (`job.settle(outcome)`); a job it leaves
unsettled (one that waits for a later event, such as an announcement) is waited on
through `job.done`. If `write` raises, the jobs it had not settled get the error.
A caller cancelled while queued withdraws its job; a round in flight is shielded,
since the callers queued in it wait on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["GroupCommit", "Job", "Signal"]


class Signal:
    """A one-way flag with an event made only when someone waits for it. A lone caller
    leads its own round and never waits, and the anyio Events made for each message
    were a measurable part of a single publisher's Python time (docs/hot-path.md)."""

    __slots__ = ("_event", "is_set")

    def __init__(self) -> None:
        self.is_set = False
        self._event: anyio.Event | None = None

    def set(self) -> None:
        self.is_set = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if not self.is_set:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()


class Job(Generic[T, R]):
    """One caller's items, waiting for (or leading) a round, then for its outcome.

    `written` is free for the writer to record what the round gave the items (ids).
    """

    __slots__ = ("confirm", "done", "items", "lead", "outcome", "wake", "written")

    def __init__(self, items: Sequence[T], confirm: bool = False) -> None:
        self.items = items
        self.confirm = confirm
        self.written: list[Any] = []
        self.wake = Signal()  # settled, or handed the lead
        self.done = Signal()  # settled
        self.lead = False
        self.outcome: R | BaseException | None = None

    def settle(self, outcome: R | BaseException) -> None:
        """Give the job its outcome (a result or an error); only the first one counts."""
        if self.outcome is None:
            self.outcome = outcome
            self.wake.set()
            self.done.set()

    def result(self) -> R:
        outcome = self.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome


class GroupCommit(Generic[T, R]):
    """Combines concurrent `submit` calls into rounds written by ``write(jobs)``."""

    def __init__(self, write: Callable[[list[Job[T, R]]], Awaitable[None]]) -> None:
        self._write = write
        self._queue: list[Job[T, R]] = []
        self._leading = False
        self.rounds = 0
        #: The task that led the last round when that round held its job alone: had it
        #: returned to nobody else, no one else can be about to join the next round.
        self._alone: int | None = None

    async def submit(self, items: Sequence[T], *, confirm: bool = False) -> R:
        """Queue `items` as one job, wait for the round that writes it and for its
        outcome, and return it (or raise the error it was settled with)."""
        job: Job[T, R] = Job(items, confirm)
        self._queue.append(job)
        if self._leading:
            try:
                await job.wake.wait()
            except BaseException:
                if job.outcome is None:  # not written: withdraw it, pass the lead on
                    if job in self._queue:
                        self._queue.remove(job)
                    if job.lead:
                        self._hand_over()
                raise
            if job.outcome is not None:
                return job.result()
            # Woken to lead the next round: our job is still queued. (A job written by
            # someone else's round is only woken once settled.)
        self._leading = True
        try:
            # Shielded: the callers queued in this round wait on it.
            with anyio.CancelScope(shield=True):
                # One turn of the event loop first, so that callers made ready by the
                # last round (it just returned to all of them) join this one: without
                # it, rounds alternate between this caller alone and everyone else.
                # Not when the last round was this caller's alone: then nobody is about
                # to join, and the turn would run the announcer of its last message
                # before this write instead of during it. (So a `write` must await: one
                # that never did would let a lone caller in a loop starve the loop. The
                # publisher's INSERT always does.)
                me = anyio.get_current_task().id
                if self._alone != me:
                    await anyio.lowlevel.cancel_shielded_checkpoint()
                jobs, self._queue = self._queue, []
                self._alone = me if len(jobs) == 1 else None
                self.rounds += 1
                try:
                    await self._write(jobs)
                except BaseException as exc:
                    for j in jobs:
                        j.settle(exc)
                    raise
        finally:
            self._hand_over()
        if job.outcome is None:  # waiting for a later event (an announcement)
            await job.done.wait()
        return job.result()

    def _hand_over(self) -> None:
        """After a round: wake the first queued caller to lead the next one."""
        if self._queue:
            first = self._queue[0]
            first.lead = True
            first.wake.set()
        else:
            self._leading = False
