"""RoleAgent: one agent's supervision tree, in its own OS process.

    RoleAgent (one_for_one, 3 restarts in 5 s)
    ├── listener      the process's one LISTEN connection (NOTIFY wake-ups)
    ├── health        HealthMonitor: heartbeats, degraded/healthy
    ├── participant   where messages land; the workflow acts on them (echo/org/agent/participant.py)
    ├── messages      Subscriber: catch-up from the cursor, then live delivery
    ├── relay         OutboxRelay (only with Redis): republishes unpublished rows
    ├── workflow      WorkflowAgent: this role's part in open workflows (echo/org/workflow/)
    ├── answers       Answerer: answers the questions put to this role (echo/org/agent/asks.py)
    └── work          ExecutorPool: runs the tasks assigned to this role

Order matters: the participant is up before the subscriber hands it anything, and
the work pool starts last. It stops in reverse order, unless the role's lease is
ending or gone (echo/org/leases.py): then `halt` cancels the whole tree at once, kills
the child process groups of the running tasks and writes nothing more. The tree
starts even when Postgres is down: every component treats the database as something
that comes and goes, so the agent runs degraded and recovers on its own. The process
around the tree (the lease or a standby, the exit status) is echo/org/agent/process.py.

Connection budget: one pooled connection plus the LISTEN connection for the tree, and
the lease keeper's own connection (echo/org/agent/lease_keeper.py: renewals must never queue
behind the role's writes), so at most 3 Postgres connections per agent; a standby
holds only the keeper's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from echo import db
from echo.bus import OutboxRelay, StoredMessage, Subscriber, make_transport
from echo.config import Settings
from echo.errors import StoreUnavailable
from echo.listener import Listener
from echo.org.agent import reach
from echo.org.agent.asks import Answerer
from echo.org.agent.deciders import ClaudeDecider
from echo.org.agent.participant import Participant
from echo.org.health import HealthMonitor
from echo.org.leases import Lease
from echo.org.roles import Role
from echo.org.workflow import SkipWhenUnavailable, WorkflowAgent, WorkflowStore
from echo.runtime import SHUTDOWN, ChildSpec, Registry, Service, Supervisor
from echo.work.claude import ClaudeExecutor, ClaudeRunOptions
from echo.work.executors import CommandExecutor, Executor, NoopExecutor
from echo.work.governor import ClaimGate, Governor
from echo.work.pool import ExecutorPool
from echo.work.workspaces import WorkspaceExecutor


def role_executors(settings: Settings, role: Role, *,
                   mcp_config: Path | None = None) -> dict[str, Executor]:
    """What this role's pool can run: Claude with the role's options, plain commands,
    and no-ops. Permission bypass reaches the CLI only if the role's file asks for it;
    with `mcp_config`, each run reaches the organisation as the role (echo/org/agent/reach.py)."""
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
            settings.claude,
            settings.database,
            options=options,
            config_dir=settings.state_dir / "claude" / role.name if role.claude.isolate_config else None,
            config_dir_per_slot=role.claude.isolate_config,
        ),
        "command": CommandExecutor(),
        "noop": NoopExecutor(),
    }


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
        heartbeat_carrier: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.role = role
        self.executors = executors
        self.heartbeat_interval = heartbeat_interval
        self.fence = fence
        self.heartbeat_carrier = heartbeat_carrier  # the lease keeper's (HealthMonitor `carrier`)
        self.registry = Registry()
        self.database: db.Database | None = None
        self.listener = Listener(settings.database)
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
        self.database = await db.Database.open(self.settings.database, min_size=0, max_size=1,
                                               fence=self.fence)
        if self.fence and self.role.claude.echo_tools != []:  # its runs act under this lease
            self.mcp_config = reach.write_config(self.settings, Lease.parse(self.fence))
        self.health = HealthMonitor(
            self.settings,
            self.database,
            self.role.name,
            interval=self.heartbeat_interval,
            stats=self.stats,
            carrier=self.heartbeat_carrier,
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
        self.subscriber = Subscriber(self.settings.bus, self.database, self.role.name, self._deliver,
                                     listener=self.listener, reporter=self.health)
        return self.subscriber

    def _new_relay(self) -> OutboxRelay:
        assert self.database is not None
        bus = self.settings.bus
        transport = make_transport(bus, self.database, listener=self.listener)
        return OutboxRelay(bus, self.database, transport, reporter=self.health)

    def _role_accounts(self) -> dict[str, str]:
        return {self.role.name: self.role.claude.account} if self.role.claude.account else {}

    def governor(self) -> Governor:
        assert self.database is not None
        return Governor(self.settings.governor, self.database, role_accounts=self._role_accounts())

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
            self.settings.work,
            self.database,
            executors,
            concurrency=self.role.work.concurrency,
            roles=[self.role.name],
            listener=self.listener,
            grace_seconds=self._new_pool_grace(),
            gate=ClaimGate.from_settings(self.settings.governor, role_accounts=self._role_accounts()),
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
