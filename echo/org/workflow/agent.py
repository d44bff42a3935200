"""The workflow agent: one role's loop over the open workflows.

Every agent runs a `WorkflowAgent`. On each wake-up it reads the open workflows
from the `WorkflowStore` and, for each, does its own part (participant.py); the
CEO's also drives (driver.py). Wake-ups: the `Participant` kicks the workflow agent
when a message of a workflow lands (the start broadcast, the CEO's phase
announcements on `messages:all`), and a tick (`settings.poll_interval`) covers
deadlines and posts on `workflow:<id>`. With no workflow open, the tick is IDLE_TICKS
times longer: a workflow opens with its start broadcast, which kicks every agent.

Failures follow the failure model (echo/errors.py) and stay in one workflow:

- the database unavailable (`StoreUnavailable`): the whole tick is deferred, and the
  agent reports itself degraded (its `Condition`) until a tick succeeds;
- Postgres refusing a statement of one workflow (`StoreRejected`: bad data, a
  constraint): that workflow is marked `error` with the reason (shown by `echoctl
  workflow show`) and leaves the open set; the others go on in the same tick;
- any other exception (a bug): logged with its traceback and retried at the next
  tick, for that workflow only.

With tracing on (echo.work.runs.traces), the role's part of each workflow is one
`invoke_workflow` span, with the `invoke_agent` spans of its questions' runs under it.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from anyio.abc import TaskStatus

from echo import db
from echo.bus import Publisher
from echo.config import Settings
from echo.degradation import Condition, Reporter
from echo.errors import StoreRejected, StoreUnavailable
from echo.logs import fields
from echo.org.agent import deciders
from echo.org.roles import Role, load_roles
from echo.org.workflow.driver import DRIVER, Driver
from echo.org.workflow.participant import RolePart
from echo.org.workflow.ports import Publish, WorkflowPort
from echo.org.workflow.store import Workflow, WorkflowStore
from echo.runtime.ticks import until_tick
from echo.work import SKIPPED, TaskQueue
from echo.work.executors import Executor, Result
from echo.work.runs.traces import WorkflowSpans, tracer
from echo.work.tasks import Task

log = logging.getLogger(__name__)

#: Ticks an agent waits between looks when no workflow was open (a kick still wakes it).
IDLE_TICKS = 10


class SkipWhenUnavailable:
    """Wraps a role's Claude executor: a workflow task that cannot run because Claude
    is not installed, not logged in or out of credit fails (not retried) as
    `skipped: claude unavailable (REASON)`; it is never recorded as done."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner

    def attach(self, database: db.Database) -> None:
        """Pass the pool's database on: the wrapped executor records its runs (events,
        sessions, transcripts), so an agent's retries and approved runs resume too."""
        attach = getattr(self.inner, "attach", None)
        if attach is not None:
            attach(database)

    async def execute(self, task: Task) -> Result:
        try:
            return await self.inner.execute(task)
        except deciders.CLAUDE_UNAVAILABLE as exc:
            if "workflow" not in task.payload:
                raise
            raise type(exc)(f"{SKIPPED} ({exc})") from exc


class WorkflowAgent:
    """One role's part in every open workflow; the CEO's also drives the phases."""

    def __init__(self, settings: Settings, database: db.Database, role: Role, *,
                 decider: deciders.ClaudeDecider | None = None, listener: Any = None,
                 tick: float | None = None, reporter: Reporter | None = None,
                 otel: Any = None) -> None:
        self.settings = settings
        self.db = database
        self.role = role
        self.decider = decider
        self.listener = listener
        self.tick = tick if tick is not None else settings.poll_interval
        self.store: WorkflowPort = WorkflowStore(database)  # mypy: the Postgres adapter is the port
        self.part: RolePart | None = None
        self.condition = Condition("workflow", reporter, log)
        self._failed: str | None = None  # a workflow's step failed (a bug) this tick
        self._wake = anyio.Event()
        self._open = True  # any open workflow at the last tick (until known: assume so)
        #: One invoke_workflow span per workflow (a tracer for tests; None: OTLP if configured).
        self.spans = WorkflowSpans(otel if otel is not None else tracer(), role.name)

    @property
    def last_error(self) -> str | None:
        """Why the last tick was degraded (None once a tick succeeded)."""
        return self.condition.last_error

    def kick(self) -> None:
        """Look at the workflows now (a message of a workflow has landed)."""
        self._wake.set()

    def make_part(self, publish: Publish) -> RolePart:
        """This role's part: the driver for the CEO, a participant for the others."""
        if self.role.name == DRIVER:
            return Driver(self.role, self.store, publish,
                          TaskQueue(self.db, max_task_bytes=self.settings.work.max_task_bytes),
                          roles=load_roles(self.settings.agents_dir), decider=self.decider)
        return RolePart(self.role, self.store, publish, decider=self.decider)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with Publisher(self.settings.bus, self.db, listener=self.listener) as pub:
            self.part = self.make_part(pub.publish)
            task_status.started()
            try:
                await self._loop()
            finally:
                for wf_id in list(self.spans.spans):
                    self.spans.end(wf_id)  # stopped mid-workflow: what it did so far
                if self.decider is not None:
                    await self.decider.close()  # its kept CLI processes

    async def _loop(self) -> None:
        while True:
            self._wake = anyio.Event()
            try:
                self._failed = None
                await self.step()
                if self._failed:
                    self.condition.trouble(self._failed)
                else:
                    self.condition.ok()
            except (StoreUnavailable, StoreRejected) as exc:
                self.condition.trouble(str(exc))  # the whole tick waits for the database
                self._open = True  # unknown: retry at the short tick
            tick = self.tick if self._open else self.tick * IDLE_TICKS
            with anyio.move_on_after(until_tick(tick)):  # with the other timers
                await self._wake.wait()

    async def step(self) -> None:
        """One pass over the open workflows."""
        assert self.part is not None, "run() first"
        open_ = await self.store.open()
        self._open = bool(open_)
        for wf in open_:
            with self.spans.current(wf.id, wf.subject):
                await self.step_one(self.part, wf)
            if self.spans.wants_conversation(wf.id):
                session = await self.store.conversation(wf.id, self.role.name)
                if session:
                    self.spans.conversation(wf.id, session)
        if self.decider is not None:
            await self.decider.keep_only({w.id for w in open_})
        for wf_id in self.spans.ended_besides(w.id for w in open_):
            ended = await self.store.get(wf_id)
            self.spans.end(wf_id, str(ended.phase) if ended else None)

    async def step_one(self, part: RolePart, wf: Workflow) -> None:
        """This role's part of one workflow (and the driving, for the CEO); a failure
        here stops this workflow at most, never the others."""
        try:
            await part.my_part(wf)
            if isinstance(part, Driver):
                await part.drive(wf)
        except StoreUnavailable:
            raise  # the database, not this workflow: the whole tick waits
        except StoreRejected as exc:
            await self._mark_error(wf, exc)
        except Exception as exc:  # one broken workflow must not stop the others or the agent
            self._failed = f"{wf.id}: {type(exc).__name__}: {exc}"
            log.exception("%s: workflow %s failed a step; retrying at the next tick",
                          self.role.name, wf.id)

    async def _mark_error(self, wf: Workflow, exc: StoreRejected) -> None:
        """Postgres refuses this workflow's step and will refuse it again: mark the
        workflow `error` with the reason, so no agent retries it every tick."""
        reason = f"{self.role.name} could not do its part of {wf.phase}: {exc}"
        log.error("workflow %s: %s; marked error", wf.id, reason,
                  extra=fields(role=self.role.name, workflow=wf.id, step="error"))
        try:
            await self.store.mark_error(wf, reason, actor=self.role.name)
        except StoreRejected as again:  # cannot even mark it: leave it to the next tick
            log.error("workflow %s: cannot mark it error either: %s", wf.id, again)
