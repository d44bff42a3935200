"""ExecutorPool: a worker's slots, and the loops that keep them busy and honest.

One pool runs at most `concurrency` tasks at once and claims only as many tasks as
it has free slots, so nothing it claims waits behind its own work. It is a plain
anyio component: `await tg.start(pool.run)` starts it, `pool.stop()` asks for a
graceful drain, and cancelling `run` releases what it holds (shielded, briefly).

Inside `run`, alongside one runner per claimed task:

- the claimer wakes on NOTIFY `<namespace>:tasks` (through the process's shared
  `Listener`) and polls every `settings.worker_check_interval` seconds anyway (idle,
  with the LISTEN connection up: when the next delayed task comes due, at most
  IDLE_POLL_FACTOR times less often; a due task it could not claim keeps the short
  poll). It
  stores the results finished since its last round together with its next claim, in
  one statement (`complete_and_claim`): the slots those tasks free are claimed for
  at once, and a busy pool pays one round trip and one commit per batch;
- the writer stores failures, and every result once the pool is stopping. A result
  that cannot be written (the database is down) stays in memory and is retried until
  the database answers; the write is guarded, so it lands only if this worker still
  owns the task. The task keeps its slot, and its lease keeps being renewed, meanwhile;
- each slot has one long-lived runner task, started the first time the slot is used,
  which runs the slot's tasks one after another: starting an anyio task costs more
  than a no-op task's whole trip through the queue;
- the heartbeat renews leases every `lease_seconds / 3` and stops any task the
  database says this worker no longer owns (rescued, or cancelled by a user);
- the owner's rule, per task (the role lease's, echo/org/leases.py): a worker runs a
  task only while its monotonic clock is before t + `lease_seconds`, t = when it sent
  the claim or renewal the database last confirmed. A run whose lease could not be
  renewed (a partition, a database that does not answer) is stopped `stop_margin`
  before that, its child process group killed, so it is over before the database
  lets another worker claim the task: two attempts of a task never overlap. The task
  goes back to the queue when its lease expires (the rescue), to run elsewhere;
- the rescuer returns expired leases of dead workers to the queue.

A database outage never crashes the pool: it reports `degraded` (its `Condition`,
pushed to the agent's `HealthMonitor` as `work`) and keeps retrying with capped
backoff. A statement Postgres rejects fails the one task it was about. An outcome is
logged (`completed`, `failed`) once it is stored, never for a result the pool then
drops because the task is no longer its own. On `stop()`,
claiming stops, running work has `grace_seconds` to finish, and whatever is still
running is then cancelled and released back to pending: never lost. `halt()` is the
role owner's deadline: every run stops at once and nothing more is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import anyio
from anyio.abc import TaskGroup, TaskStatus

from echo.config import Settings
from echo.db import Database, nul_free
from echo.degradation import Condition, Reporter
from echo.errors import ClaudeDeferred, EchoError, StoreRejected, StoreUnavailable, UsageError
from echo.listener import Listener, Registration
from echo.logs import fields
from echo.runtime import Backoff
from echo.work.approvals.store import ApprovalStore
from echo.work.executors import Executor, Result
from echo.work.governor.gate import ClaimGate
from echo.work.process import stop_margin
from echo.work.queue import (
    AWAITING_APPROVAL,
    DEFAULT_BACKOFF,
    Completion,
    Failure,
    Task,
    TaskQueue,
)
from echo.work.workers import WorkerRegistry
from echo.work.workspaces.repository import workspace_place

log = logging.getLogger(__name__)

_pool_numbers = itertools.count(1)
#: How the pool waits out a database that does not answer (claims, writes).
DB_BACKOFF = Backoff(initial=0.1, max=5.0)
#: An idle pool whose LISTEN connection is up polls this many times less often (NOTIFY
#: wakes it; the poll is a safety net), unless a delayed task comes due sooner.
IDLE_POLL_FACTOR = 10
#: The error of a task whose result (or error) Postgres refused to store.
NOT_STORABLE = "result not storable"


@dataclass(frozen=True)
class PoolMetrics:
    pool_size: int
    active: int
    available_slots: int
    total_processed: int
    succeeded: int
    failed: int
    released: int
    lost: int
    unwritten: int  # finished, result not yet stored (e.g. the database is down)
    avg_duration_ms: float
    success_rate: float
    degraded: bool
    last_error: str | None
    claim_rounds: int = 0  # claim queries made: an idle pool has made at least one
    db_errors: int = 0     # failed database calls (claims, writes) while degraded


@dataclass(eq=False)
class _Running:
    task: Task
    slot: int
    started: float = field(default_factory=time.monotonic)
    writing: bool = False
    scope: anyio.CancelScope | None = None  # its runner's, while it executes
    cancelled: bool = False
    #: The owner's rule: the send time of its last confirmed claim or renewal, plus
    #: the lease (anyio's clock, which is the monotonic clock).
    valid_until: float = float("inf")

    def cancel(self) -> None:
        """Stop the work (a user cancelled it, its lease was lost, or a drain); a task
        that already finished is left to its write."""
        if self.writing:
            return
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()


def default_worker_prefix() -> str:
    """host:pid, with a suffix for the second and later pools of one process."""
    number = next(_pool_numbers)
    pid = f"{os.getpid()}" if number == 1 else f"{os.getpid()}-{number}"
    return f"{socket.gethostname()}:{pid}"


class ExecutorPool:
    """Claims and runs tasks of the types in `executors`, for `roles` (None: any role)."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
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
    ) -> None:
        if concurrency < 1:
            raise UsageError("a pool needs at least one slot (concurrency >= 1)")
        if not executors:
            raise UsageError("a pool needs at least one executor")
        self.settings = settings
        self.queue = TaskQueue(database)
        self.approvals = ApprovalStore(database)
        self.executors = dict(executors)
        for executor in self.executors.values():  # e.g. Claude runs record their events
            attach = getattr(executor, "attach", None)
            if attach is not None:
                attach(database)
        self.concurrency = concurrency
        self.roles = list(roles) if roles is not None else None
        self.listener = listener
        self.lease_seconds = lease_seconds
        self.grace_seconds = grace_seconds
        self.backoff = backoff
        self.worker_prefix = worker_prefix or default_worker_prefix()
        #: Where its worktrees are: a task whose worktree is elsewhere is not its to claim.
        self.place = workspace_place(settings)
        #: The governor's part of every claim: budgets, account pauses, the breaker.
        self.gate = gate or ClaimGate.from_settings(settings)
        self.condition = Condition("work", reporter, log)
        self._free = list(range(concurrency))
        self._held: dict[int, _Running] = {}
        self._assigned: dict[int, _Running] = {}  # slot -> task its runner is to run next
        self._slot_ready: dict[int, anyio.Event] = {}  # slot -> its runner's wake-up
        self._outbox: list[tuple[_Running, Completion | Failure]] = []
        self._outbox_ready = anyio.Event()
        self._wake = anyio.Event()
        self._slot_freed = anyio.Event()
        self._poked = False  # the claimer was woken for results it has not taken yet
        self._idle = anyio.Event()
        self._stopping = anyio.Event()
        self._counts = {"succeeded": 0, "failed": 0, "released": 0, "lost": 0}
        self._durations_ms = 0.0
        self._claim_rounds = 0
        self._db_errors = 0
        self._halted = False
        #: How long before a task's lease ends its run is stopped.
        self.margin = stop_margin(lease_seconds)

    # ------------------------------------------------------------------ public
    def worker_id(self, slot: int) -> str:
        return f"{self.worker_prefix}:{slot}"

    def metrics(self) -> PoolMetrics:
        processed = self._counts["succeeded"] + self._counts["failed"]
        return PoolMetrics(
            pool_size=self.concurrency, active=len(self._held),
            available_slots=len(self._free), total_processed=processed,
            succeeded=self._counts["succeeded"], failed=self._counts["failed"],
            released=self._counts["released"], lost=self._counts["lost"],
            unwritten=sum(1 for r in self._held.values() if r.writing),
            avg_duration_ms=self._durations_ms / processed if processed else 0.0,
            success_rate=self._counts["succeeded"] / processed if processed else 1.0,
            degraded=self.condition.degraded, last_error=self.condition.last_error,
            claim_rounds=self._claim_rounds, db_errors=self._db_errors,
        )

    def wake(self) -> None:
        """Claim now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Begin the graceful drain; `run` returns when it is over."""
        self._stopping.set()
        self._wake.set()
        self._slot_freed.set()
        self._outbox_ready.set()  # the writer now stores completions too

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
                tg.start_soon(self._heartbeats)
                tg.start_soon(self._rescues)
                # presence, so a task nobody claims can say why (echo.work.workers)
                tg.start_soon(partial(WorkerRegistry(self.queue.db).keep, self.worker_prefix,
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
        self._db_errors += 1
        self.condition.trouble(f"cannot {doing}: {exc}")

    def _take_completions(self) -> list[tuple[_Running, Completion | Failure]]:
        done = [item for item in self._outbox if isinstance(item[1], Completion)]
        if done:
            self._outbox = [item for item in self._outbox if not isinstance(item[1], Completion)]
        return done

    async def _claim_loop(self, tg: TaskGroup) -> None:
        retry = DB_BACKOFF.attempts()
        types = sorted(self.executors)
        while not self._stopping.is_set():
            self._poked = False
            done = self._take_completions()
            slots = self._free + [running.slot for running, _ in done]
            if not slots:
                await self._slot_freed.wait()
                self._slot_freed = anyio.Event()
                continue
            self._wake = anyio.Event()
            sent = anyio.current_time()
            try:
                applied, tasks = await self.queue.complete_and_claim(
                    [outcome for _, outcome in done if isinstance(outcome, Completion)],
                    [self.worker_id(s) for s in slots], task_types=types, roles=self.roles,
                    lease_seconds=self.lease_seconds, gate=self.gate, place=self.place)
                self._claim_rounds += 1
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
                self._outbox[:0] = done
                self._outbox_ready.set()  # the writer's, should the pool be stopping
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
                running = _Running(task, slot, valid_until=sent + self.lease_seconds)
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
            due = await self.queue.next_due(types, self.roles, self.place)
        except (StoreUnavailable, StoreRejected):
            return None
        idle = self.settings.worker_check_interval * IDLE_POLL_FACTOR
        if due is None:
            return idle
        return None if due <= 0 else min(max(due, 0.01), idle)

    def _dispatch(self, tg: TaskGroup, running: _Running) -> None:
        """Hand a task to its slot's runner, starting the runner on the slot's first use."""
        ready = self._slot_ready.get(running.slot)
        if ready is None:
            self._slot_ready[running.slot] = anyio.Event()
            tg.start_soon(self._slot_runner, running)
        else:
            self._assigned[running.slot] = running
            ready.set()

    async def _slot_runner(self, running: _Running) -> None:
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
            self._counts["lost"] += 1
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
    async def _execute(self, running: _Running) -> None:
        """Run one task; a cancellation (see `_Running.cancel`) propagates to the runner."""
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
            outcome = self._failure(task, exc)
        running.writing = True
        self._durations_ms += (time.monotonic() - running.started) * 1000
        self._outbox.append((running, outcome))
        if isinstance(outcome, Completion) and not self._stopping.is_set():
            if not self._poked:  # the claimer stores it with its next claim
                self._poked = True
                self._wake.set()
                self._slot_freed.set()
        else:
            self._outbox_ready.set()

    def _failure(self, task: Task, exc: Exception) -> Failure:
        if isinstance(exc, ClaudeDeferred):  # waits for a decision, holding no slot
            return Failure(task, str(exc), True, counted=False, run=exc.run, awaiting=True)
        retryable = getattr(exc, "retryable", None)
        if retryable is None:
            retryable = not isinstance(exc, UsageError)
        if isinstance(exc, EchoError):
            message = str(exc)
        else:
            log.exception("executor %s crashed on task %s", task.task_type, task.task_id)
            message = f"executor crashed: {type(exc).__name__}: {exc}"
        run = getattr(exc, "run", None)
        message = message.replace("\x00", "\\0")  # Postgres stores no NUL in text
        retry_at: datetime | None = getattr(exc, "retry_at", None)
        if run is not None and run.pause_until is not None:
            retry_at = run.pause_until  # the account's pause: no run before it anyway
        if retry_at is not None:
            delay = (retry_at - datetime.now(UTC)).total_seconds()
            return Failure(task, message, True, delay=delay, counted=False, run=run)
        return Failure(task, message, bool(retryable), delay=self.backoff.delay(task.retry_count),
                       run=run)

    def _free_slot(self, running: _Running) -> None:
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
            await self._outbox_ready.wait()
            self._outbox_ready = anyio.Event()
            if self._stopping.is_set():
                batch, self._outbox = self._outbox, []
            else:  # the claimer stores completions with its next claim
                batch = [item for item in self._outbox if isinstance(item[1], Failure)]
                self._outbox = [item for item in self._outbox if isinstance(item[1], Completion)]
            if batch:
                await self._write(batch)

    async def _write(self, batch: list[tuple[_Running, Completion | Failure]], *,
                     retry: bool = True, singly: bool = False) -> None:
        """Store a batch, retrying through outages; the guards decide what lands. What
        Postgres rejects is stored item by item (`_complete`, `_fail`), so one result it
        refuses fails its own task and never holds up the others."""
        done = [o for _, o in batch if isinstance(o, Completion)]
        failed = [o for _, o in batch if isinstance(o, Failure)]
        applied: set[int] = set()
        statuses: dict[int, str] = {}
        attempts = DB_BACKOFF.attempts()
        while True:
            try:
                failed += await self._complete(done, applied, singly=singly)
                await self._fail(failed, statuses)
                self.condition.ok()
                break
            except StoreUnavailable as exc:
                if not retry:
                    raise
                self._trouble(exc, "store task results")
                await anyio.sleep(attempts.next_delay())
        self._settle(batch, applied, statuses)

    async def _complete(self, done: list[Completion], applied: set[int], *,
                        singly: bool = False) -> list[Failure]:
        """Store `done`, emptying it as results land (so an outage midway retries only
        the rest). A batch Postgres rejects is stored one by one; a result it rejects on
        its own fails its task, permanently, with the reason (returned, to be stored).
        `singly`: the batch was rejected already (with a claim), go one by one at once."""
        if len(done) > 1 and not singly:
            try:
                applied |= await self.queue.complete(done, gate=self.gate)
                done.clear()
                return []
            except StoreRejected:
                pass
        if len(done) > 1:
            log.warning("%d results rejected together; storing them one by one", len(done))
        failures = []
        while done:
            try:
                applied |= await self.queue.complete(done[:1], gate=self.gate)
            except StoreRejected as exc:
                failures.append(self._unstorable(done[0], exc))
            done.pop(0)
        return failures

    @staticmethod
    def _unstorable(done: Completion, exc: StoreRejected) -> Failure:
        log.error("task %s: result not storable (%s); the task fails", done.task.task_id, exc)
        return Failure(done.task, f"{NOT_STORABLE}: {exc.reason}", False,
                       cost_usd=done.cost_usd, session_id=done.session_id, run=done.run)

    async def _fail(self, failed: list[Failure], statuses: dict[int, str]) -> None:
        """Store failures, emptying `failed` as they land; item by item once Postgres
        rejects the batch. A failure rejected on its own is stored once more with the
        reason as its error; rejected again, it is given up (logged): its lease expires
        and the rescue takes it, within its retries."""
        if not failed:
            return
        try:
            statuses.update(await self.queue.fail(failed, gate=self.gate))
            failed.clear()
            return
        except StoreRejected as exc:
            log.warning("%d failure(s) rejected (%s); storing them one by one", len(failed), exc)
        while failed:
            one = failed[0]
            try:
                statuses.update(await self.queue.fail([one], gate=self.gate))
            except StoreRejected as exc:
                if not one.error.startswith(NOT_STORABLE):
                    failed[0] = dataclasses.replace(
                        one, error=f"{NOT_STORABLE}: its error was refused: {exc.reason}", retryable=False)
                    continue
                log.error("task %s: cannot store its failure (%s); its lease will expire",
                          one.task.task_id, exc)
            failed.pop(0)

    def _settle(self, batch: list[tuple[_Running, Completion | Failure]], applied: set[int],
                statuses: Mapping[int, str]) -> None:
        """Count and log what landed and free the slots of a written batch."""
        for running, outcome in batch:
            tid = running.task.task_id
            if tid in applied:
                self._counts["succeeded"] += 1
                _log_outcome(running.task, outcome, "completed")
            elif tid in statuses:
                self._counts["failed"] += 1
                if isinstance(outcome, Failure):  # else: its result was refused, logged so
                    _log_outcome(running.task, outcome, statuses[tid])
            else:
                self._counts["lost"] += 1
                log.warning("task %s finished after this worker lost its lease; result dropped",
                            tid)
            self._free_slot(running)

    # ------------------------------------------------------------ leases, rescue
    async def _heartbeats(self) -> None:
        interval = max(self.lease_seconds / 3, 0.05)
        while True:
            await anyio.sleep(interval)
            held = [r for r in self._held.values()]
            if not held:
                continue
            sent = anyio.current_time()
            # A renewal that comes back after the runs stopped is no use: give up on it
            # then, so the next one goes out on time once the database answers again.
            owned: set[int] | None = None
            with anyio.move_on_after(max(min(r.valid_until for r in held) - sent, interval)):
                try:
                    owned = await self.queue.heartbeat([r.task for r in held], self.lease_seconds)
                except (StoreUnavailable, StoreRejected) as exc:
                    self._trouble(exc, "renew leases")
            if owned is None:
                continue
            for running in held:
                if running.task.task_id in owned:
                    running.valid_until = sent + self.lease_seconds
                    if running.scope is not None:
                        running.scope.deadline = running.valid_until - self.margin
                elif not running.writing:
                    log.warning("task %s is no longer ours (cancelled or rescued); stopping it",
                                running.task.task_id)
                    self._counts["lost"] += 1
                    running.cancel()

    async def _rescues(self) -> None:
        while True:
            try:
                rescued = await self.queue.rescue(actor=f"{self.worker_prefix}:rescue",
                                                  backoff=self.backoff)
            except (StoreUnavailable, StoreRejected) as exc:
                self._trouble(exc, "rescue expired leases")
                rescued = {}
            if rescued:
                log.warning("rescued %d task(s) with expired leases: %s", len(rescued), rescued)
                self._wake.set()
            try:
                woken = await self.approvals.sweep()
            except (StoreUnavailable, StoreRejected) as exc:
                self._trouble(exc, "expire approval requests")
                woken = []
            if woken:
                log.info("approval requests decided or expired: task(s) %s queued again", woken)
                self._wake.set()
            await anyio.sleep(max(self.settings.worker_check_interval, self.lease_seconds / 6))

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

    async def _release(self, running: list[_Running]) -> None:
        if not running:
            return
        try:
            released = await self.queue.release([r.task for r in running])
        except (StoreUnavailable, StoreRejected) as exc:
            self._trouble(exc, "release tasks on shutdown")
            log.warning("could not release %d task(s); their leases will expire and "
                        "another worker will rescue them", len(running))
            return
        self._counts["released"] += len(released)
        for r in running:
            self._free_slot(r)

    async def _abandon(self) -> None:
        """`run` is ending (cancelled, or after a drain): one last try to store finished
        results and to release unfinished work; what fails here is rescued later."""
        batch, self._outbox = self._outbox, []
        if batch:
            with contextlib.suppress(StoreUnavailable, StoreRejected):
                await self._write(batch, retry=False)
        executing = [r for r in self._held.values() if not r.writing]
        for running in executing:
            running.cancel()
        await self._release(executing)


def _log_outcome(task: Task, outcome: Completion | Failure, status: str) -> None:
    """One line per stored task outcome (`status`: the task's status it left), with role,
    task and workflow as fields (`echoctl logs --json --task N` finds it)."""
    where = fields(role=task.role, task=task.task_id, workflow=task.payload.get("workflow"),
                   type=task.task_type, attempt=task.attempt)
    if isinstance(outcome, Completion):
        where["fields"]["outcome"] = "completed"
        log.info("task %s (%s) completed", task.task_id, task.task_type, extra=where)
        return
    if status == AWAITING_APPROVAL:
        where["fields"]["outcome"] = AWAITING_APPROVAL
        log.info("task %s (%s) %s", task.task_id, task.task_type, outcome.error, extra=where)
        return
    again = status == "pending"
    where["fields"]["outcome"] = "retrying" if again else "failed"
    log.warning("task %s (%s) %s: %s", task.task_id, task.task_type,
                "failed, will retry" if again else "failed", outcome.error, extra=where)
