"""ExecutorPool: claims as many tasks as it has free slots and runs them, one runner per
slot (the package's docstring has the whole picture). This room holds the pool's own
state (slots, held runs, the outbox of finished results) and the loops that change
it: the claim loop, the slot runners, the rescuer and the drain. Storing outcomes is
the writer's (`writer.py`), renewing leases the lease keeper's (`leases.py`), what an
error means for its task the retry decision's (`retry.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial

import anyio
from anyio.abc import TaskGroup, TaskStatus

from echo.db import DB_BACKOFF, Database, nul_free
from echo.degradation import Condition, Reporter
from echo.errors import StoreRejected, StoreUnavailable, UsageError
from echo.listener import Listener, Registration
from echo.logs import fields
from echo.runtime import Backoff
from echo.runtime.ticks import until_tick
from echo.slices import WorkSettings
from echo.work.executors import Executor, Result
from echo.work.governor.gate import ClaimGate
from echo.work.pool.leases import TaskLeaseKeeper
from echo.work.pool.ports import PoolStores
from echo.work.pool.rescue import Rescuer
from echo.work.pool.retry import failure_of
from echo.work.pool.running import PoolMetrics, Running, Tally, default_worker_prefix
from echo.work.pool.writer import NOT_STORABLE, Outbox, ResultWriter, log_outcome
from echo.work.process import stop_margin
from echo.work.queue import DEFAULT_BACKOFF
from echo.work.tasks import Completion, Failure
from echo.work.workspaces.repository import workspace_place

log = logging.getLogger(__name__)

#: An idle pool whose LISTEN connection is up polls this many times less often (NOTIFY
#: wakes it; the poll is a safety net), unless a delayed task comes due sooner.
IDLE_POLL_FACTOR = 10


class ExecutorPool:
    """Claims and runs tasks of the types in `executors`, for `roles` (None: any role).

    `settings` is the work's slice: its polls, and this worker's node and state directory
    (where its worktrees are). `gate` is the governor's part of every claim, made by
    `ClaimGate.from_settings(settings.governor)`; None: `ClaimGate()`, the default
    account and UTC days (a test, a bench)."""

    def __init__(
        self,
        settings: WorkSettings,
        stores: Database | PoolStores,
        executors: Mapping[str, Executor],
        *,
        concurrency: int = 4,
        roles: Sequence[str] | None = None,
        listener: Listener | None = None,
        lease_seconds: float = 30.0,
        grace_seconds: float = 10.0,
        backoff: Backoff = DEFAULT_BACKOFF,
        worker_prefix: str | None = None,
        gate: ClaimGate | None = None,
        reporter: Reporter | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if concurrency < 1:
            raise UsageError("a pool needs at least one slot (concurrency >= 1)")
        if not executors:
            raise UsageError("a pool needs at least one executor")
        self.settings = settings
        self.stores = stores if isinstance(stores, PoolStores) else PoolStores.postgres(stores)
        self.tasks = self.stores.tasks
        self.executors = dict(executors)
        if self.stores.database is not None:
            for executor in self.executors.values():  # e.g. Claude runs record their events
                attach = getattr(executor, "attach", None)
                if attach is not None:
                    attach(self.stores.database)
        self.concurrency = concurrency
        self.roles = list(roles) if roles is not None else None
        self.listener = listener
        self.lease_seconds = lease_seconds
        self.grace_seconds = grace_seconds
        self.backoff = backoff
        self.worker_prefix = worker_prefix or default_worker_prefix()
        #: Where its worktrees are: a task whose worktree is elsewhere is not its to claim.
        self.place = workspace_place(settings)
        #: The governor's part of every claim: budgets, account pauses, the breaker; for
        #: the governed types this pool runs (none: the claim skips the gate).
        gate = gate or ClaimGate()
        self.gate = dataclasses.replace(
            gate, governed=tuple(t for t in gate.governed if t in self.executors))
        self.condition = Condition("work", reporter, log)
        #: The wall clock of the retry decision (a plan's reset is a moment).
        self.clock = clock
        self._free = list(range(concurrency))
        self._held: dict[int, Running] = {}
        self._assigned: dict[int, Running] = {}  # slot -> task its runner is to run next
        self._slot_ready: dict[int, anyio.Event] = {}  # slot -> its runner's wake-up
        self._outbox = Outbox()
        self._wake = anyio.Event()
        self._slot_freed = anyio.Event()
        self._poked = False  # the claimer was woken for results it has not taken yet
        self._idle = anyio.Event()
        self._stopping = anyio.Event()
        self.tally = Tally()
        self._halted = False
        #: How long before a task's lease ends its run is stopped.
        self.margin = stop_margin(lease_seconds)
        self.writer = ResultWriter(self.tasks, self.gate, trouble=self._trouble,
                                   ok=self.condition.ok)
        self.leases = TaskLeaseKeeper(self.tasks, lease_seconds, self.margin,
                                      held=lambda: list(self._held.values()),
                                      trouble=self._trouble, lost=self._lost)
        self.rescuer = Rescuer(self.stores, f"{self.worker_prefix}:rescue", backoff,
                               max(settings.worker_check_interval, lease_seconds / 6),
                               trouble=self._trouble, wake=self.wake)

    # ------------------------------------------------------------------ public
    def worker_id(self, slot: int) -> str:
        return f"{self.worker_prefix}:{slot}"

    def metrics(self) -> PoolMetrics:
        return self.tally.metrics(self.concurrency, list(self._held.values()), len(self._free),
                                  self.condition)

    def wake(self) -> None:
        """Claim now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Begin the graceful drain; `run` returns when it is over."""
        self._stopping.set()
        self._wake.set()
        self._slot_freed.set()
        self._outbox.kick()  # the writer now stores completions too

    def halt(self) -> None:
        """Stop every run now and write nothing more (the role's lease is ending or
        gone): no drain, no release; the tasks go back when their leases expire."""
        self._halted = True
        for running in list(self._held.values()):
            running.cancel()
        self.stop()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        registrations: list[Registration] = []
        if self.listener is not None:
            registrations += [await self.listener.listen("tasks", self._on_notify),
                              self.listener.on_reconnect(self.wake)]
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer)
                tg.start_soon(self.leases.run)
                tg.start_soon(self.rescuer.run)
                # presence, so a task nobody claims can say why (echo.work.workers)
                tg.start_soon(partial(self.stores.presence.keep, self.worker_prefix,
                                      self.roles, list(self.executors), place=self.place,
                                      halted=lambda: self._halted))
                task_status.started()
                await self._claim_loop(tg)
                await self._drain()
                tg.cancel_scope.cancel()
        finally:
            for registration in registrations:
                registration.close()
            if not self._halted:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await self._abandon()

    # ---------------------------------------------------------------- claiming
    def _on_notify(self, payload: str) -> None:
        if payload.startswith("cancel:"):
            with contextlib.suppress(ValueError):
                running = self._held.get(int(payload[7:]))
                if running is not None:
                    running.cancel()
            return
        self._wake.set()

    @property
    def degraded(self) -> bool:
        return self.condition.degraded

    def _trouble(self, exc: BaseException, doing: str) -> None:
        self.tally.db_errors += 1
        self.condition.trouble(f"cannot {doing}: {exc}")

    async def _claim_loop(self, tg: TaskGroup) -> None:
        retry = DB_BACKOFF.attempts()
        types = sorted(self.executors)
        while not self._stopping.is_set():
            self._poked = False
            done = self._outbox.completions()
            slots = self._free + [running.slot for running, _ in done]
            if not slots:
                await self._slot_freed.wait()
                self._slot_freed = anyio.Event()
                continue
            self._wake = anyio.Event()
            sent = anyio.current_time()
            try:
                applied, tasks = await self.tasks.complete_and_claim(
                    [outcome for _, outcome in done if isinstance(outcome, Completion)],
                    [self.worker_id(s) for s in slots], task_types=types, roles=self.roles,
                    lease_seconds=self.lease_seconds, gate=self.gate, place=self.place)
                self.tally.claim_rounds += 1
                self.condition.ok()
                retry.reset()
            except StoreRejected as exc:
                if done:  # maybe a result Postgres refuses: store them on their own
                    await self._write(done, singly=True)
                    continue
                self._trouble(exc, "claim tasks")  # a broken schema: nothing to fail
                with anyio.move_on_after(retry.next_delay()):
                    await self._stopping.wait()
                continue
            except StoreUnavailable as exc:
                # The results stay in memory, their slots held, until a write lands.
                self._outbox.put_back(done)  # the writer's, should the pool be stopping
                self._trouble(exc, "claim tasks")
                with anyio.move_on_after(retry.next_delay()):
                    await self._stopping.wait()
                continue
            self._settle(done, applied, {})
            if tasks and not self._held:
                self._idle = anyio.Event()
            for task in tasks:
                slot = int(task.worker_id.rsplit(":", 1)[1])
                self._free.remove(slot)
                running = Running(task, slot, valid_until=sent + self.lease_seconds)
                self._held[task.task_id] = running
                self._dispatch(tg, running)
            if len(tasks) < len(slots):  # a result finished meanwhile sets _wake
                wait = await self._idle_wait(types) if not tasks else None
                with anyio.move_on_after(wait or self.settings.worker_check_interval):
                    await self._wake.wait()

    async def _idle_wait(self, types: list[str]) -> float | None:
        """How long an empty claim round may sleep (None: the poll interval). While the
        LISTEN connection is up, NOTIFY wakes the pool for every new or returned task
        (and a reconnect wakes it), so the poll is only for what no NOTIFY announces: a
        delayed task coming due (sleep until then), or a due task the governor or another
        claimer held (poll as before). With nothing pending: a long safety poll."""
        if self.listener is None or not self.listener.connected:
            return None
        try:
            due = await self.tasks.next_due(types, self.roles, self.place)
        except (StoreUnavailable, StoreRejected):
            return None
        idle = self.settings.worker_check_interval * IDLE_POLL_FACTOR
        if due is None:
            return until_tick(idle)  # a safety poll: with the process's other timers
        return None if due <= 0 else min(max(due, 0.01), idle)

    def _dispatch(self, tg: TaskGroup, running: Running) -> None:
        """Hand a task to its slot's runner, starting the runner on the slot's first use."""
        ready = self._slot_ready.get(running.slot)
        if ready is None:
            self._slot_ready[running.slot] = anyio.Event()
            tg.start_soon(self._slot_runner, running)
        else:
            self._assigned[running.slot] = running
            ready.set()

    async def _slot_runner(self, running: Running) -> None:
        """Runs the slot's tasks one after another, all inside one cancel scope (a scope
        per task costs as much again as the rest of a no-op task's path). Cancelling a
        task cancels this scope: the runner frees the slot and ends, and the slot's next
        task starts a new runner."""
        slot = running.slot
        with anyio.CancelScope() as scope:
            while True:
                if running.cancelled:  # cancelled before it started
                    self._free_slot(running)
                else:
                    running.scope = scope
                    scope.deadline = running.valid_until - self.margin
                    await self._execute(running)
                    scope.deadline = float("inf")
                    running.scope = None
                ready = self._slot_ready[slot]
                await ready.wait()
                self._slot_ready[slot] = anyio.Event()
                running = self._assigned.pop(slot)
        del self._slot_ready[slot]
        if scope.cancelled_caught and not running.cancelled and not running.writing:
            self.tally.lost += 1
            log.warning("task %s: its lease could not be renewed (the last confirmed renewal "
                        "was sent %.1f s ago); stopped its run before the lease can pass on; "
                        "the task goes back to the queue when its lease expires",
                        running.task.task_id,
                        self.lease_seconds - (running.valid_until - anyio.current_time()),
                        extra=fields(role=running.task.role, task=running.task.task_id,
                                     attempt=running.task.attempt, outcome="stopped"))
        if not running.writing:
            self._free_slot(running)

    # --------------------------------------------------------------- executing
    async def _execute(self, running: Running) -> None:
        """Run one task; a cancellation (see `Running.cancel`) propagates to the runner."""
        task = running.task
        outcome: Completion | Failure
        try:
            result: Result = await self.executors[task.task_type].execute(task)
            if nul_free(result.output):
                outcome = Completion(task, result.output, result.cost_usd, result.session_id,
                                     result.run)
            else:  # Postgres stores no NUL in jsonb: fail it here, not in the batch
                outcome = Failure(task, f"{NOT_STORABLE}: NUL byte", False,
                                  cost_usd=result.cost_usd, session_id=result.session_id,
                                  run=result.run)
        except Exception as exc:
            outcome = failure_of(task, exc, backoff=self.backoff, now=self.clock())
        running.writing = True
        self.tally.durations_ms += (time.monotonic() - running.started) * 1000
        for_claimer = isinstance(outcome, Completion) and not self._stopping.is_set()
        self._outbox.put(running, outcome, for_writer=not for_claimer)
        if for_claimer and not self._poked:  # the claimer stores it with its next claim
            self._poked = True
            self._wake.set()
            self._slot_freed.set()

    def _free_slot(self, running: Running) -> None:
        if self._held.pop(running.task.task_id, None) is None:
            return
        self._free.append(running.slot)
        if not self._slot_freed.is_set():
            self._slot_freed.set()
        if not self._held:
            self._idle.set()

    # ----------------------------------------------------------------- writing
    async def _writer(self) -> None:
        while True:
            batch = await self._outbox.for_writer(self._stopping.is_set)
            if batch:
                await self._write(batch)

    async def _write(self, batch: list[tuple[Running, Completion | Failure]], *,
                     retry: bool = True, singly: bool = False) -> None:
        """Store a batch (the writer retries through outages; the guards decide what
        lands), then settle it."""
        applied, statuses = await self.writer.store([o for _, o in batch], retry=retry,
                                                    singly=singly)
        self._settle(batch, applied, statuses)

    def _settle(self, batch: list[tuple[Running, Completion | Failure]], applied: set[int],
                statuses: Mapping[int, str]) -> None:
        """Count and log what landed and free the slots of a written batch."""
        for running, outcome in batch:
            tid = running.task.task_id
            if tid in applied:
                self.tally.succeeded += 1
                log_outcome(running.task, outcome, "completed")
            elif tid in statuses:
                self.tally.failed += 1
                if isinstance(outcome, Failure):  # else: its result was refused, logged so
                    log_outcome(running.task, outcome, statuses[tid])
            else:
                self.tally.lost += 1
                log.warning("task %s finished after this worker lost its lease; result dropped",
                            tid)
            self._free_slot(running)

    # ------------------------------------------------------------------ leases
    def _lost(self, running: Running) -> None:
        self.tally.lost += 1

    # ---------------------------------------------------------------- draining
    async def _drain(self) -> None:
        """Let running work finish within the grace period, then give the rest back."""
        if self._held:
            with anyio.move_on_after(self.grace_seconds):
                await self._idle.wait()
        executing = [r for r in self._held.values() if not r.writing]
        for running in executing:
            running.cancel()
        await self._release(executing)
        # Results already finished are written before the pool stops (or until the
        # grace runs out a second time: their leases then expire and they are rescued).
        with anyio.move_on_after(self.grace_seconds):
            while self._held:
                self._slot_freed = anyio.Event()
                await self._slot_freed.wait()

    async def _release(self, running: list[Running]) -> None:
        if not running:
            return
        try:
            released = await self.tasks.release([r.task for r in running])
        except (StoreUnavailable, StoreRejected) as exc:
            self._trouble(exc, "release tasks on shutdown")
            log.warning("could not release %d task(s); their leases will expire and "
                        "another worker will rescue them", len(running))
            return
        self.tally.released += len(released)
        for r in running:
            self._free_slot(r)

    async def _abandon(self) -> None:
        """`run` is ending (cancelled, or after a drain): one last try to store finished
        results and to release unfinished work; what fails here is rescued later."""
        batch = self._outbox.take_all()
        if batch:
            with contextlib.suppress(StoreUnavailable, StoreRejected):
                await self._write(batch, retry=False)
        executing = [r for r in self._held.values() if not r.writing]
        for running in executing:
            running.cancel()
        await self._release(executing)

