"""The result writer: stores what the pool's runs produced, through outages and refusals.

Two failure modes, two answers (echo.errors): a database that does not answer
(`StoreUnavailable`) is waited out with capped backoff, retrying only what has not
landed; a statement Postgres refuses (`StoreRejected`) is retried item by item, so one
result it cannot store fails its own task, with the reason, and never holds up the
others. The guards decide what lands: a result of a task this worker no longer owns
is missing from the answer, and the pool drops it (logged there).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import anyio

from echo.db import DB_BACKOFF
from echo.errors import StoreRejected, StoreUnavailable
from echo.logs import fields
from echo.work.governor.gate import ClaimGate
from echo.work.pool.ports import PoolTasks
from echo.work.pool.running import Running
from echo.work.queue import AWAITING_APPROVAL
from echo.work.tasks import Completion, Failure, Task

log = logging.getLogger(__name__)

#: The error of a task whose result (or error) Postgres refused to store.
NOT_STORABLE = "result not storable"


Finished = tuple[Running, Completion | Failure]


class Outbox:
    """Finished results not yet stored, each with the run that made it. Completions
    wait for the claimer, which stores them with its next claim (one statement frees
    and refills their slots); failures, and everything once the pool is stopping (or
    put back after an outage), are the writer's."""

    def __init__(self) -> None:
        self.items: list[Finished] = []
        self._ready = anyio.Event()

    def put(self, running: Running, outcome: Completion | Failure, *, for_writer: bool) -> None:
        self.items.append((running, outcome))
        if for_writer:
            self._ready.set()

    def put_back(self, items: list[Finished]) -> None:
        """Results a claim could not store (the database is down): first in line."""
        self.items[:0] = items
        self._ready.set()

    def kick(self) -> None:
        """Wake the writer (the pool is stopping: it stores completions too)."""
        self._ready.set()

    def completions(self) -> list[Finished]:
        done = [item for item in self.items if isinstance(item[1], Completion)]
        if done:
            self.items = [item for item in self.items if not isinstance(item[1], Completion)]
        return done

    def take_all(self) -> list[Finished]:
        items, self.items = self.items, []
        return items

    async def for_writer(self, stopping: Callable[[], bool]) -> list[Finished]:
        """Wait until there is work for the writer; the failures (everything when
        `stopping()`), taken out of the box."""
        await self._ready.wait()
        self._ready = anyio.Event()
        if stopping():
            return self.take_all()
        batch = [item for item in self.items if isinstance(item[1], Failure)]
        self.items = [item for item in self.items if isinstance(item[1], Completion)]
        return batch


class ResultWriter:
    """Stores batches of outcomes on `tasks`; `trouble` and `ok` report to the pool's
    condition (degraded while the database does not answer)."""

    def __init__(self, tasks: PoolTasks, gate: ClaimGate, *,
                 trouble: Callable[[BaseException, str], None],
                 ok: Callable[[], None]) -> None:
        self.tasks = tasks
        self.gate = gate
        self._trouble = trouble
        self._ok = ok

    async def store(self, outcomes: Sequence[Completion | Failure], *, retry: bool = True,
                    singly: bool = False) -> tuple[set[int], dict[int, str]]:
        """Store a batch, retrying through outages (unless not `retry`: then the outage
        is raised): the ids of the results stored, and the status each stored failure
        left its task in. `singly`: the batch was rejected already (with a claim)."""
        done = [o for o in outcomes if isinstance(o, Completion)]
        failed = [o for o in outcomes if isinstance(o, Failure)]
        applied: set[int] = set()
        statuses: dict[int, str] = {}
        attempts = DB_BACKOFF.attempts()
        while True:
            try:
                failed += await self._complete(done, applied, singly=singly)
                await self._fail(failed, statuses)
                self._ok()
                return applied, statuses
            except StoreUnavailable as exc:
                if not retry:
                    raise
                self._trouble(exc, "store task results")
                await anyio.sleep(attempts.next_delay())

    async def _complete(self, done: list[Completion], applied: set[int], *,
                        singly: bool = False) -> list[Failure]:
        """Store `done`, emptying it as results land (so an outage midway retries only
        the rest). A batch Postgres rejects is stored one by one; a result it rejects on
        its own fails its task, permanently, with the reason (returned, to be stored)."""
        if len(done) > 1 and not singly:
            try:
                applied |= await self.tasks.complete(done, gate=self.gate)
                done.clear()
                return []
            except StoreRejected:
                pass
        if len(done) > 1:
            log.warning("%d results rejected together; storing them one by one", len(done))
        failures = []
        while done:
            try:
                applied |= await self.tasks.complete(done[:1], gate=self.gate)
            except StoreRejected as exc:
                failures.append(_unstorable(done[0], exc))
            done.pop(0)
        return failures

    async def _fail(self, failed: list[Failure], statuses: dict[int, str]) -> None:
        """Store failures, emptying `failed` as they land; item by item once Postgres
        rejects the batch. A failure rejected on its own is stored once more with the
        reason as its error; rejected again, it is given up (logged): its lease expires
        and the rescue takes it, within its retries."""
        if not failed:
            return
        try:
            statuses.update(await self.tasks.fail(failed, gate=self.gate))
            failed.clear()
            return
        except StoreRejected as exc:
            log.warning("%d failure(s) rejected (%s); storing them one by one", len(failed), exc)
        while failed:
            one = failed[0]
            try:
                statuses.update(await self.tasks.fail([one], gate=self.gate))
            except StoreRejected as exc:
                if not one.error.startswith(NOT_STORABLE):
                    failed[0] = dataclasses.replace(
                        one, error=f"{NOT_STORABLE}: its error was refused: {exc.reason}", retryable=False)
                    continue
                log.error("task %s: cannot store its failure (%s); its lease will expire",
                          one.task.task_id, exc)
            failed.pop(0)


def _unstorable(done: Completion, exc: StoreRejected) -> Failure:
    log.error("task %s: result not storable (%s); the task fails", done.task.task_id, exc)
    return Failure(done.task, f"{NOT_STORABLE}: {exc.reason}", False,
                   cost_usd=done.cost_usd, session_id=done.session_id, run=done.run)


def log_outcome(task: Task, outcome: Completion | Failure, status: str) -> None:
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
