"""RoleAgent: one agent's supervision tree, in its own OS process.

    RoleAgent (one_for_one, 3 restarts in 5 s)
    ├── listener      the process's one LISTEN connection (NOTIFY wake-ups)
    ├── health        HealthMonitor: heartbeats, degraded/healthy
    ├── participant   where messages land; the workflow acts on them
    ├── messages      Subscriber: catch-up from the cursor, then live delivery
    ├── relay         OutboxRelay (only with Redis): republishes unpublished rows
    ├── workflow      WorkflowAgent: this role's part in open workflows (echo/org/workflow/)
    ├── answers       Answerer: answers the questions put to this role (echo/org/asks.py)
    └── work          ExecutorPool: runs the tasks assigned to this role

Order matters: the participant is up before the subscriber hands it anything, and
the work pool starts last. It stops in reverse order, unless the role's lease is
ending or gone (echo/org/leases.py): then `halt` cancels the whole tree at once, kills
the child process groups of the running tasks and writes nothing more. The tree
starts even when Postgres is down: every component treats the database as something
that comes and goes, so the agent runs degraded and recovers on its own.

Connection budget: one pooled connection plus the LISTEN connection for the tree, and
the lease keeper's own connection (echo/org/leases.py: renewals must never queue
behind the role's writes), so at most 3 Postgres connections per agent; a standby
holds only the keeper's.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from echo import db
from echo.bus import Kind, OutboxRelay, StoredMessage, Subscriber, make_transport
from echo.bus.store import record_inbox
from echo.config import Settings
from echo.errors import StoreUnavailable
from echo.listener import Listener
from echo.logs import fields
from echo.org import reach
from echo.org.asks import Answerer
from echo.org.deciders import ClaudeDecider
from echo.org.health import HealthMonitor
from echo.org.leases import Lease, Predecessor
from echo.org.roles import Role
from echo.org.workflow import SkipWhenUnavailable, WorkflowAgent, WorkflowStore
from echo.runtime import SHUTDOWN, Actor, Backoff, ChildSpec, Registry, Service, Supervisor
from echo.work.claude import ClaudeExecutor, ClaudeRunOptions
from echo.work.executors import CommandExecutor, Executor, NoopExecutor
from echo.work.governor import ClaimGate, Governor
from echo.work.pool import ExecutorPool
from echo.work.workspaces import WorkspaceExecutor

log = logging.getLogger(__name__)

#: How a participant waits out a database that cannot record a message.
DB_BACKOFF = Backoff(initial=0.1, max=5.0)

#: The handling's database effects: run on the connection whose transaction records
#: the message, so they commit with its inbox row or not at all.
Handle = Callable[[Any, StoredMessage], Awaitable[None]]


def role_executors(settings: Settings, role: Role, *,
                   mcp_config: Path | None = None) -> dict[str, Executor]:
    """What this role's pool can run: Claude with the role's options, plain commands,
    and no-ops. Permission bypass reaches the CLI only if the role's file asks for it;
    with `mcp_config`, each run reaches the organisation as the role (echo/org/reach.py)."""
    options = ClaudeRunOptions(
        model=role.claude.model,
        system_prompt=role.system_prompt,
        allowed_tools=tuple(role.claude.allowed_tools),
        max_turns=role.claude.max_turns,
        max_budget_usd=role.claude.max_budget_usd,
        skip_permissions=role.claude.skip_permissions,
        account=role.claude.account,
        idle_timeout=role.claude.idle_timeout,
        workspace_tools=tuple(role.workspace.tools),
        approval_tools=tuple(role.approval.tools),
        **reach.run_options(role, mcp_config),
    )
    return {
        "claude": ClaudeExecutor(
            settings,
            options=options,
            config_dir=settings.state_dir / "claude" / role.name if role.claude.isolate_config else None,
            config_dir_per_slot=role.claude.isolate_config,
        ),
        "command": CommandExecutor(),
        "noop": NoopExecutor(),
    }


class Participant(Actor):
    """Handles each message once per role: its inbox row and its handling commit together.

    What handling a message is: (1) `handle`'s database writes, if any (none in a
    plain agent today); (2) the line `<role> processed message <id> from ...`, the
    record a person and the chaos checkers read; (3) a kick of the workflow loop when
    the message belongs to a workflow (its body names one), so the role does its part
    now rather than at its next tick. All three happen INSIDE the transaction that
    inserts the `agent_inbox` row, before its commit; the row carries the attempt's
    id, and so does the line (`attempt=...`).

    What that guarantees, across SIGKILL at any instant (issue 19, fault 1: the row
    used to commit first, and an agent killed before logging left a message recorded
    but never handled, which its successor skipped as a redelivery):

    - the database writes of the handling happen exactly once per (role, message):
      they commit with the row, and a redelivery of a committed row is skipped;
    - a committed row always has its line, written by the attempt it names, because
      the line was written before the commit. An attempt that dies (or whose commit
      fails) before committing has written a line too, and the next attempt writes
      another; those are attempts that rolled back, not processings, so a reader of
      the log counts a processing only for the line whose attempt is the row's
      (`tests/chaos/conftest.py` does);
    - the kick is idempotent (the workflow loop re-reads every open workflow, and does
      its missing part only), so repeating it with a retried attempt is harmless.

    A database outage while recording is waited out with capped backoff rather than
    crashing; the message was already read and the next attempt handles it again.
    """

    def __init__(self, database: db.Database, role: str, registry: Registry,
                 on_workflow: Callable[[], None] | None = None,
                 handle: Handle | None = None,
                 on_question: Callable[[], None] | None = None) -> None:
        super().__init__(name=f"{role}.participant")
        self.db = database
        self.role = role
        self.registry = registry
        self.on_workflow = on_workflow
        self.on_question = on_question
        self.handle = handle
        self.processed = 0
        self.redelivered = 0
        self.last_message_id = 0

    async def init(self) -> None:
        self.registry.register("participant", self)

    async def handle_call(self, request: Any) -> Any:
        kind, message = request
        if kind != "message":
            raise ValueError(f"participant got an unknown request {kind!r}")
        return await self._process(message)

    async def _process(self, message: StoredMessage) -> bool:
        retry = DB_BACKOFF.attempts()
        while True:
            attempt = secrets.token_hex(6)
            try:
                async with self.db.transaction() as conn:
                    fresh = await record_inbox(conn, self.role, message.id, attempt)
                    if fresh:
                        await self._handle(conn, message, attempt)
                break
            except StoreUnavailable as exc:
                log.warning("cannot record message %s (%s); retrying", message.id, exc)
                await anyio.sleep(retry.next_delay())
        self.last_message_id = max(self.last_message_id, message.id)
        if not fresh:
            self.redelivered += 1
            return False
        self.processed += 1
        return True

    async def _handle(self, conn: Any, message: StoredMessage, attempt: str) -> None:
        """The handling, inside the recording transaction (see the class docstring)."""
        if self.handle is not None:
            await self.handle(conn, message)
        log.info("%s processed message %s from %s: %s", self.role, message.id, message.from_role,
                 message.subject, extra=fields(attempt=attempt))
        if self.on_workflow is not None and isinstance(message.body, dict) and "workflow" in message.body:
            self.on_workflow()
        if self.on_question is not None and message.kind == Kind.QUESTION and message.to_role == self.role:
            self.on_question()


class RoleAgent:
    """Builds and owns one role's supervision tree."""

    def __init__(
        self,
        settings: Settings,
        role: Role,
        *,
        executors: dict[str, Executor] | None = None,
        heartbeat_interval: float = 1.0,
        fence: str | None = None,
    ) -> None:
        self.settings = settings
        self.role = role
        self.executors = executors
        self.heartbeat_interval = heartbeat_interval
        self.fence = fence
        self.registry = Registry()
        self.database: db.Database | None = None
        self.listener = Listener(settings)
        self.subscriber: Subscriber | None = None
        self.pool: ExecutorPool | None = None
        self.health: HealthMonitor | None = None
        self.workflow: WorkflowAgent | None = None
        self.answerer: Answerer | None = None
        self.mcp_config: Path | None = None  # the role's `echo` MCP server for its runs
        self._work: Service | None = None

    async def open(self) -> None:
        """The pool is lazy (min_size=0), so opening it works with Postgres down. With a
        `fence` (the role's lease), every write it makes is checked against the lease."""
        self.database = await db.Database.open(self.settings, min_size=0, max_size=1, fence=self.fence)
        if self.fence and self.role.claude.echo_tools != []:  # its runs act under this lease
            self.mcp_config = reach.write_config(self.settings, Lease.parse(self.fence))
        self.health = HealthMonitor(
            self.settings,
            self.database,
            self.role.name,
            interval=self.heartbeat_interval,
            stats=self.stats,
        )
        self.listener.condition.reporter = self.health

    async def close(self, *, at_once: bool = False) -> None:
        """`at_once`: drop the connections without a word to the server (it may not
        answer: the tree was halted)."""
        reach.remove_config(self.mcp_config)
        if self.database is not None:
            if at_once:
                self.database.pool.terminate()
            else:
                await self.database.close()

    async def stop(self, tree: Supervisor, halt: anyio.Event) -> object:
        """Stop `tree` in order (reverse start order, the pool's drain), or `halt` it
        the moment `halt` is set, before or meanwhile."""
        reason: object = None
        if not halt.is_set():
            async with anyio.create_task_group() as tg:

                async def ordered() -> None:
                    nonlocal reason
                    reason = await tree.stop()
                    tg.cancel_scope.cancel()

                tg.start_soon(ordered)
                await halt.wait()
                tg.cancel_scope.cancel()
        if halt.is_set():
            reason = await self.halt(tree)
        return reason

    async def halt(self, tree: Supervisor) -> object:
        """Cancel the whole tree at once (OTP's brutal kill) and write nothing more:
        the role's lease is ending or gone. Returns once the work pool has unwound,
        that is once the process groups of its running tasks are dead (TERM, then KILL,
        echo/work/process.py); its tasks go back to the queue when their leases expire."""
        if self.pool is not None:
            self.pool.halt()
        reason = await tree.stop(SHUTDOWN, "brutal_kill")
        if self._work is not None:
            await self._work.wait()
        return reason

    # -- the tree ------------------------------------------------------------------

    def supervisor(self) -> Supervisor:
        assert self.database is not None and self.health is not None, "call open() first"
        database, health = self.database, self.health
        specs = [
            ChildSpec("listener", lambda: Service(self.listener.run, name="listener")),
            ChildSpec("health", lambda: Service(health.run, name="health")),
            ChildSpec("participant", lambda: Participant(database, self.role.name, self.registry,
                                                         on_workflow=self._kick_workflow,
                                                         on_question=self._kick_answers)),
            ChildSpec("messages", lambda: Service(self._new_subscriber().run, name="messages")),
        ]
        if self.settings.redis_url:
            specs.append(ChildSpec("relay", lambda: Service(self._new_relay().run, name="relay")))
        specs.append(ChildSpec("workflow", lambda: Service(self._new_workflow().run, name="workflow")))
        specs.append(ChildSpec("answers", lambda: Service(self._new_answerer().run, name="answers")))
        if self.role.work.concurrency > 0:
            specs.append(
                ChildSpec(
                    "work",
                    lambda: self._pool_service(),
                    shutdown=self._new_pool_grace() + 5,
                )
            )
        return Supervisor(specs, strategy="one_for_one", name=f"{self.role.name}.agent")

    async def _deliver(self, message: StoredMessage) -> None:
        participant = self.registry.whereis("participant")
        if participant is None or not isinstance(participant, Participant):
            raise StoreUnavailable("participant is restarting")
        await participant.call(("message", message), timeout=None)

    def _new_subscriber(self) -> Subscriber:
        assert self.database is not None
        self.subscriber = Subscriber(self.database, self.role.name, self._deliver,
                                     listener=self.listener, reporter=self.health)
        return self.subscriber

    def _new_relay(self) -> OutboxRelay:
        assert self.database is not None
        transport = make_transport(self.settings, self.database, listener=self.listener)
        return OutboxRelay(self.database, transport, reporter=self.health)

    def _role_accounts(self) -> dict[str, str]:
        return {self.role.name: self.role.claude.account} if self.role.claude.account else {}

    def governor(self) -> Governor:
        assert self.database is not None
        return Governor(self.settings, self.database, role_accounts=self._role_accounts())

    async def sync_governor(self) -> None:
        """Write the configured budgets (the organisation's, this role's) and the
        breaker's threshold; an operator's `echoctl budget set` still wins."""
        await self.governor().sync({self.role.name: self.role.budget.daily_usd})

    def _new_workflow(self) -> WorkflowAgent:
        assert self.database is not None
        decider = ClaudeDecider(self.settings, self.role, governor=self.governor(),
                                mcp_config=self.mcp_config,
                                conversations=WorkflowStore(self.database))
        self.workflow = WorkflowAgent(self.settings, self.database, self.role,
                                      decider=decider, listener=self.listener,
                                      reporter=self.health)
        return self.workflow

    def _new_answerer(self) -> Answerer:
        assert self.database is not None
        # No `echo` server for an answer's run: it could `ask` back, and two roles would
        # then ask each other on and on, each answer paid for, after the asker gave up.
        decider = ClaudeDecider(self.settings, self.role, governor=self.governor())
        self.answerer = Answerer(self.settings, self.database, self.role, decider=decider,
                                 listener=self.listener, reporter=self.health)
        return self.answerer

    def _kick_answers(self) -> None:
        if self.answerer is not None:
            self.answerer.kick()

    def _kick_workflow(self) -> None:
        if self.workflow is not None:
            self.workflow.kick()

    def _new_pool_grace(self) -> float:
        return 10.0

    def _pool_service(self) -> Service:
        assert self.database is not None
        executors = dict(self.executors or role_executors(self.settings, self.role,
                                                          mcp_config=self.mcp_config))
        if "claude" in executors:  # workflow tasks: an unavailable Claude is `skipped`
            executors["claude"] = SkipWhenUnavailable(executors["claude"])
        # A task with a repository runs in its own worktree (echo.work.workspaces).
        executors = {n: WorkspaceExecutor(e, self.settings.state_dir) for n, e in executors.items()}
        self.pool = ExecutorPool(
            self.settings,
            self.database,
            executors,
            concurrency=self.role.work.concurrency,
            roles=[self.role.name],
            listener=self.listener,
            grace_seconds=self._new_pool_grace(),
            gate=ClaimGate.from_settings(self.settings, role_accounts=self._role_accounts()),
            lease_seconds=self.settings.task_lease_seconds,
            reporter=self.health,
        )
        self._work = Service(self.pool.run, name="work", graceful=self.pool.stop)
        return self._work

    # -- what the health monitor reports ----------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Figures for the heartbeat's details. A pure read: problems and recoveries are
        pushed to the HealthMonitor by the components themselves (echo/degradation.py)."""
        out: dict[str, Any] = {}
        participant = self.registry.whereis("participant")
        if isinstance(participant, Participant):
            out["processed"] = participant.processed
            out["redelivered"] = participant.redelivered
        if self.subscriber is not None:
            out["inbox_lag"] = self.subscriber.stats.lag
            out["cursor"] = self.subscriber.cursor
            out["messages_state"] = self.subscriber.state
        if self.pool is not None:
            metrics = self.pool.metrics()
            out["running_tasks"] = metrics.active
            out["tasks_processed"] = metrics.total_processed
        if self.workflow is not None and self.workflow.last_error:
            out["workflow_error"] = self.workflow.last_error
        out["listener_connected"] = self.listener.connected
        if self.fence:  # the lease epoch it acts under: its supervisor passes it on a restart
            out["epoch"] = Lease.parse(self.fence).epoch
        return out


async def ensure_schema(settings: Settings, *, attempts: int | None = None,
                        then: Callable[[], Awaitable[None]] | None = None) -> bool:
    """Migrate (and run `then`), retrying while the database is away. True once the
    schema is current."""
    retry = Backoff(initial=0.2, max=5.0).attempts()
    while attempts is None or retry.failures < attempts:
        try:
            await db.migrate(settings)
            if then is not None:
                await then()
            return True
        except StoreUnavailable as exc:
            delay = retry.next_delay()
            log.warning("cannot migrate yet (%s); retrying in %.1fs", exc, delay)
            await anyio.sleep(delay)
    return False


async def _cancel_on(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _every_second(fn: Callable[[], None]) -> None:
    while True:
        fn()
        await anyio.sleep(1.0)


async def run_agent(settings: Settings, role: Role, *, ready_line: str | None,
                    predecessor: Predecessor | None = None) -> int:
    """Run one agent until SIGTERM/SIGINT, its parent's death, or its tree giving up.

    The process holds the role's lease (echo/org/leases.py) and runs the role's tree
    while it does; otherwise it stands by, and says so once on stdout. It prints
    `ready_line` (if any: only a supervisor that waits for it asks for one) once it is
    settled either way. Returns the exit status: 0 after a clean stop, 1 if the tree
    gave up. A `predecessor` (the dead process its supervisor replaces) lets it take
    the role that process held at once, rather than after the lease expires.
    """
    import os
    import sys

    from echo.org.leases import LeaseKeeper, Owner
    from echo.org.organisation import install_stop_signals
    from echo.org.standby import announce_standby, exit_with_parent
    from echo.runtime import gave_up

    db.set_application_name(f"echo-agent:{settings.namespace}:{role.name}")
    stop = anyio.Event()
    undo = install_stop_signals(stop)
    keeper = LeaseKeeper(settings, role.name, predecessor=predecessor)
    await keeper.open()
    settled = anyio.Event()

    def ready() -> None:
        if not settled.is_set():
            if ready_line:
                sys.stdout.write(f"{ready_line} {role.name} {os.getpid()}\n")
                sys.stdout.flush()
            settled.set()

    def on_standby(owner: Owner | None, error: str | None) -> None:
        announce_standby(settings, role, owner, error)
        ready()

    async def act(lease: Lease, quit_: anyio.Event) -> object:
        agent = RoleAgent(settings, role, fence=lease.fence)
        await agent.open()
        assert agent.database is not None
        # A write the fence refused: the lease is gone, whatever the keeper knows yet.
        agent.database.on_fenced = lambda exc: keeper.lost(f"the fence refused a write ({exc})")
        try:
            try:
                await agent.sync_governor()
            except StoreUnavailable as exc:  # the tree degrades and retries by itself
                log.warning("%s: budgets not written yet: %s", role.name, exc)
            if keeper.halted.is_set():
                return None
            tree = agent.supervisor()
            await tree.start()
            log.info("%s agent active (pid %s, epoch %s)", role.name, os.getpid(), lease.epoch,
                     extra=fields(role=role.name))
            ready()
            async with anyio.create_task_group() as tg:

                async def quit_on_exit() -> None:
                    await tree.wait()
                    quit_.set()

                tg.start_soon(quit_on_exit)
                await quit_.wait()
                with anyio.CancelScope(shield=True):
                    reason = await agent.stop(tree, keeper.halted)
                tg.cancel_scope.cancel()
            if keeper.halted.is_set():
                log.warning("%s: the role's tree is down, its child processes killed",
                            role.name, extra=fields(role=role.name, event="halted",
                                                    at=round(keeper.clock(), 6),
                                                    deadline=round(keeper.valid_until, 6)))
            return reason
        finally:
            with anyio.CancelScope(shield=True):
                await agent.close(at_once=keeper.halted.is_set())

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(exit_with_parent)
            if not await ensure_schema(settings, attempts=1):
                with anyio.CancelScope() as waiting:
                    tg.start_soon(_cancel_on, stop, waiting)
                    async with anyio.create_task_group() as beating:
                        # Degraded, and fresh about it: a heartbeat once a second, so
                        # status never calls a waiting agent `unresponsive`.
                        beating.start_soon(_every_second, lambda: on_standby(
                            None, "the database is unavailable; waiting for it"))
                        await ensure_schema(settings)
                        beating.cancel_scope.cancel()
                    waiting.cancel()
            reason = await keeper.run(act, stop=stop, on_standby=on_standby)
            tg.cancel_scope.cancel()
        escalation = gave_up(reason) if isinstance(reason, str | tuple | BaseException) else None
        if escalation is not None:
            log.error("%s agent gave up: %s", role.name, escalation)
            sys.stderr.write(f"error: {role.name} agent gave up: {escalation}\n")
            return 1
        log.info("%s agent stopped", role.name)
        return 0
    finally:
        undo()
        with anyio.CancelScope(shield=True):
            await keeper.close()
