"""The one API for users of an organisation: what the CLI and the console call.

In the spirit of procrastinate's `App`: one object, built from `Settings`, that owns
its connections and offers the operations people perform, with typed results.

    async with Client(settings) as c:
        sent = await c.broadcast("Q3 plan", "Move the API", sender="ceo")
        sent.db_id, sent.receivers
        task = await c.submit_task("Summarise the plan", role="cto")
        detail = await c.workflow("wf-1")            # WorkflowDetail
        status = await c.status()                    # OrgStatus, per agent

The client opens its database pool on first use (so `status` works with Postgres
down) and its publisher on the first send, and closes both on exit. It holds no
SQL: queries live in shared/sql/queries/*.sql behind the stores (`MessageStore`,
`TaskQueue`, `WorkflowStore`). Every operation on a namespace that has not been
migrated says so in one line (`MigrationError`), whichever table it touches first.
Input is checked before anything is written; bad input raises a `UsageError` leaf.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from types import TracebackType
from typing import Any

import anyio

from echo import db
from echo.bus import ALL, Kind, Message, MessageStore, Published, Publisher, StoredMessage
from echo.config import Settings
from echo.errors import EchoError, NotFound, UsageError
from echo.org import asks, control
from echo.org.charts import FinishedChart, SpendChart, check_minutes, finished_chart, spend_chart
from echo.org.governance import annotate_waiting, governor_for, governor_summary, synced_governor
from echo.org.health import read_health_file
from echo.org.inputs import check_decider, check_id, check_seconds, normalise_workflow_id
from echo.org.overview import RoleOverview, role_overview
from echo.org.repos import RepoService
from echo.org.roles import NON_AGENT_SENDERS, check_role, load_role, role_names
from echo.org.status import (
    STALE_AFTER,
    OrgStatus,
    collect_status,
)
from echo.org.views import (
    ApprovalDetail,
    DoingNow,
    Inbox,
    RunEventRow,
    SendKind,
    Sent,
    Submitted,
    TaskDetail,
    TaskEvent,
    TaskRun,
    TaskSummary,
)
from echo.org.workflow import (
    QUORUMS,
    Decision,
    Delivery,
    Phase,
    Workflow,
    WorkflowDetail,
    WorkflowStore,
    post_uuid,
)
from echo.work import NewTask, TaskQueue, check_outcome, task_outcome
from echo.work.approvals import Approval, ApprovalStore
from echo.work.approvals.store import check_state as check_approval_state
from echo.work.governor import Governor, SpendReport, check_amount, spend_report
from echo.work.runs import PgRunStore
from echo.work.workspaces import RESERVED_KEYS


class NoAgentsUp(EchoError):
    """A workflow needs running agents, and none is up."""


class Client:
    """The operations users perform on one organisation (`settings.namespace`)."""

    def __init__(self, settings: Settings, *, database: db.Database | None = None,
                 fence: str | None = None) -> None:
        """`fence` ('role/epoch/holder', `echo.org.leases.Lease.fence`): the pool this
        client opens writes as that role, so once the role's lease has passed on every
        write is refused (`LeaseLost`) and nothing is stored: what a Claude run of the
        role gets through MCP (echo.mcp). With `database`, that pool is used as given."""
        self.settings = settings
        self.fence = fence
        self._db = database
        self._owns_db = database is None
        self._publisher: Publisher | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the publisher (its announcements flushed) and the pool this client opened."""
        try:
            await self._stack.aclose()
        finally:
            self._publisher = None
            if self._owns_db and self._db is not None:
                await self._db.close()
                self._db = None

    # ------------------------------------------------------------ plumbing

    async def database(self) -> db.Database:
        """The client's pool, opened on first use."""
        if self._db is None:
            self._db = await db.Database.open(self.settings, min_size=0, max_size=2, fence=self.fence)
        return self._db

    async def open_publisher(self) -> None:
        """Open the publisher now, in the calling task. Its background tasks belong to the
        task that opens it, so a server (the console) calls this at start, not from
        inside one request; a command line client lets the first send open it."""
        if self._publisher is None:
            self._publisher = await self._stack.enter_async_context(Publisher(await self.database()))

    async def _publish(self, message: Message, *, confirm: bool = False) -> Published:
        await self.open_publisher()
        assert self._publisher is not None
        return await self._publisher.publish(message, confirm=confirm)

    @contextlib.contextmanager
    def _migrated(self) -> Iterator[None]:
        """One line, not a traceback, on a namespace that has not been migrated."""
        with db.schema_guard(self.settings.namespace):
            yield

    @contextlib.asynccontextmanager
    async def _workflows(self) -> AsyncIterator[WorkflowStore]:
        with self._migrated():
            yield WorkflowStore(await self.database())

    @contextlib.asynccontextmanager
    async def _queue(self) -> AsyncIterator[TaskQueue]:
        with self._migrated():
            yield TaskQueue(await self.database())

    @contextlib.asynccontextmanager
    async def repos(self) -> AsyncIterator[RepoService]:
        """Repositories and their workspaces (`echo.org.repos`): add, list, show, remove,
        the merge queue, gc, a task's diff."""
        with self._migrated():
            yield RepoService(self.settings, await self.database())

    # ------------------------------------------------------------ the bus

    def message(self, subject: str, body: str | None = None, *, sender: str = "operator",
                to: str = ALL, kind: str = SendKind.BROADCAST) -> Message:
        """The message `broadcast` would send, fully validated (a `UsageError` leaf if not)."""
        s = self.settings
        check_role(sender, s.agents_dir, allow=NON_AGENT_SENDERS)
        check_role(to, s.agents_dir, allow=(ALL,))
        if kind not in set(SendKind):
            raise UsageError(f"kind {kind!s} is not one a person sends; use one of: "
                             f"{', '.join(SendKind)}")
        chosen = Kind(str(kind))
        return Message.build(
            from_role=sender, to_role=to, subject=subject,
            kind=chosen if to == ALL or chosen != Kind.BROADCAST else Kind.DIRECT,
            body={} if body is None else {"text": body}, max_body_bytes=s.max_body_bytes)

    async def broadcast(self, subject: str, body: str | None = None, *, sender: str = "operator",
                        to: str = ALL, kind: str = SendKind.BROADCAST) -> Sent:
        """Publish to every role (`to="all"`) or one role: stored, then announced.

        Returns once the announcement went out (or was left to the outbox relay), with
        the `db_id` and how many receivers Redis reached (NOTIFY cannot count: 0)."""
        message = self.message(subject, body, sender=sender, to=to, kind=kind)
        with self._migrated():
            result = await self._publish(message, confirm=True)
        receivers = None if result.transport == "notify" else result.receivers
        return Sent(db_id=result.db_id, channel=message.channel, receivers=receivers,
                    published=result.published, transport=result.transport)

    async def messages(self, *, role: str | None = None, after: int | None = None,
                       limit: int = 20) -> list[StoredMessage]:
        """Messages oldest first: those after id `after`, else the latest `limit`;
        with `role`, only what it sent or received (direct or broadcast)."""
        if role is not None:
            check_role(role, self.settings.agents_dir, allow=NON_AGENT_SENDERS)
        if after is not None:
            check_id(after, "since (a message id)", least=0)
        with self._migrated():
            return await MessageStore(await self.database()).list_messages(
                role=role, since=after, limit=limit)

    async def ask(self, role: str, question: str, *, within: float = 60.0,
                  sender: str = "operator") -> asks.Answered:
        """Ask `role` a question and wait up to `within` seconds for its agent's answer
        (its Claude's, or its fallback's, which says so): echo/org/asks.py.

        Refused before anything is written: an unknown role, asking oneself, an empty
        question, a timeout outside 1-600 s, a role whose agent is not up."""
        s = self.settings
        check_role(sender, s.agents_dir, allow=NON_AGENT_SENDERS)
        check_role(role, s.agents_dir)
        message = asks.question(sender, role, question, within, max_body_bytes=s.max_body_bytes)
        with self._migrated():
            if role not in await self.live_roles():
                raise NoAgentsUp(f"{role} is not up to answer; start it (`echoctl up --detach`, "
                                 "then `echoctl status`) and ask again")
            published = await self._publish(message, confirm=True)
            store = MessageStore(await self.database())
            assert message.thread_id is not None
            with anyio.move_on_after(within):
                while True:
                    reply = await store.answer_on(message.thread_id)
                    if reply is not None:
                        return asks.answered(published.db_id, reply)
                    await anyio.sleep(0.2)
        raise EchoError(f"{role} did not answer within {within:g}s (question "
                        f"{published.db_id}); its answer, if it comes, is on thread "
                        f"{message.thread_id} (`echoctl messages --role {sender}`)")

    async def inbox(self, role: str) -> Inbox:
        """A role's cursor and its unread messages (what `agents/<role>/<role>` prints)."""
        from echo.bus import broadcast_channel, role_channel

        chosen = load_role(self.settings.agents_dir, role)
        with self._migrated():
            store = MessageStore(await self.database())
            cursor = await store.read_cursor(role)
            unread = await store.fetch_after(cursor, [broadcast_channel(), role_channel(role)],
                                             limit=50)
        health = read_health_file(self.settings, role, STALE_AFTER)
        return Inbox(role=role, title=chosen.title, state=health.state if health else "not running",
                     cursor=cursor, unread=list(unread))

    async def overview(self, role: str) -> RoleOverview:
        """What a role is up to: its state, unread and recent messages, running and
        pending tasks (what `echoctl agent ROLE` prints)."""
        chosen = load_role(self.settings.agents_dir, role)
        with self._migrated():
            return await role_overview(self.settings, await self.database(), chosen,
                                       stale_after=STALE_AFTER)

    # ------------------------------------------------------------ tasks

    async def submit_task(self, description: str, *, role: str | None = None, priority: int = 0,
                          timeout_seconds: int = 300, max_retries: int = 3,
                          task_type: str = "claude",
                          dedupe_key: str | None = None,
                          payload: dict[str, Any] | None = None,
                          repo: str | None = None) -> Submitted:
        """Queue a task (for a role's workers when `role` is given; in its own worktree
        of repository `repo` when given: the repository goes in its payload)."""
        if role is not None:
            check_role(role, self.settings.agents_dir)
        task = NewTask(description, task_type=task_type, priority=priority, role=role,
                       timeout_seconds=timeout_seconds, max_retries=max_retries,
                       dedupe_key=dedupe_key,
                       payload=payload or {})
        task.check(self.settings.max_task_bytes)
        reserved = sorted(set(task.payload) & set(RESERVED_KEYS))
        if reserved:
            raise UsageError(f"payload key {reserved[0]!r} is set by ECHO; name a repository "
                             "with --repo")
        if repo is not None:
            async with self.repos() as repos:
                task = replace(task, payload={**task.payload, "repo": await repos.payload(repo)})
        async with self._queue() as q:
            made = (await q.enqueue_many([task]))[0]
        return Submitted(task_id=made.task_id, created=made.created)

    async def tasks(self, *, status: str | None = None, role: str | None = None,
                    limit: int = 50) -> list[TaskSummary]:
        """The latest tasks, newest first, optionally of one outcome (`skipped` too:
        `TaskSummary.outcome`) or role."""
        check_outcome(status)
        if role is not None:
            check_role(role, self.settings.agents_dir)
        async with self._queue() as q:
            rows = await annotate_waiting(self.settings, q.db,
                                          await q.list(status=status, role=role, limit=limit))
        return [TaskSummary.model_validate(r) for r in rows]

    async def task(self, task_id: int) -> TaskDetail:
        """One task (every column) and its audit trail; `NotFound` if there is none."""
        check_id(task_id)
        async with self._queue() as q:
            row = await q.get(task_id)
            row["outcome"] = task_outcome(row["status"], row.get("error"))
            await annotate_waiting(self.settings, q.db, [row])
            history = await q.history(task_id)
            events = await PgRunStore(q.db).events(task_id, limit=10_000)
            runs = await governor_for(self.settings, q.db).runs_of_task(task_id)
            approvals = await ApprovalStore(q.db).of_task(task_id)
        return TaskDetail(task=row, history=[TaskEvent.model_validate(h) for h in history],
                          events=[RunEventRow.model_validate(e) for e in events],
                          runs=[TaskRun.model_validate(r) for r in runs], approvals=approvals)

    async def doing_now(self) -> list[DoingNow]:
        """Each running Claude task's latest event: what each agent is doing now."""
        async with self._queue() as q:
            rows = await PgRunStore(q.db).doing_now()
        return [DoingNow.model_validate(r) for r in rows]

    async def task_events(self, task_id: int, *, after: tuple[int, int] = (0, 0)
                          ) -> tuple[str, list[RunEventRow]]:
        """The task's status and its run events after (attempt, seq): what `--follow`
        polls."""
        async with self._queue() as q:
            row = await q.get(task_id)
            events = await PgRunStore(q.db).events(task_id, after=after)
        return row["status"], [RunEventRow.model_validate(e) for e in events]

    async def cancel_task(self, task_id: int) -> str:
        """Cancel a pending or running task; returns the status it had."""
        check_id(task_id)
        async with self._queue() as q:
            return await q.cancel(task_id, actor="operator")

    async def retry_task(self, task_id: int, *, anywhere: bool = False) -> None:
        """Queue a failed, dead or cancelled task again, with its retries reset. With
        `anywhere`, any worker may take it, not only the one with its worktree (a
        repository without a push): it starts over from the base; a pending task
        waiting for that worker is let go too."""
        check_id(task_id)
        async with self._queue() as q:
            await q.requeue(task_id, actor="operator", anywhere=anywhere)

    async def task_counts(self) -> dict[str, int]:
        """How many tasks have each outcome (`TaskSummary.outcome`: skipped apart from
        failed), every one of `echo.work.OUTCOMES`, zeros included."""
        async with self._queue() as q:
            return await q.counts()

    async def spend(self) -> list[dict[str, Any]]:
        """The recorded cost of task runs per role: `{"role", "runs", "cost_usd"}`, with
        the governor's figures for today: `spent_today_usd` and `budget_usd` (None: no
        budget), for the roles with a budget or a run today too."""
        async with self._queue() as q:
            rows = await q.spend()
        report = await self.spend_report()
        today = {r.role: r for r in report.roles}
        by_role = {r["role"]: r for r in rows}
        for name in today:
            if name not in by_role and name != "(none)":
                by_role[name] = {"role": name, "runs": 0, "cost_usd": 0.0}
        for name, row in by_role.items():
            found = today.get(name or "(none)")
            row["spent_today_usd"] = found.spent_usd if found else 0.0
            row["budget_usd"] = found.budget_usd if found else None
        return sorted(by_role.values(), key=lambda r: r["role"] or "")

    async def finished_chart(self, *, minutes: int = 60) -> FinishedChart:
        """Tasks finished per minute by outcome over the last `minutes` (the database's
        clock): the console's throughput chart."""
        check_minutes(minutes)
        async with self._queue() as q:
            rows = await q.finished_by_minute(minutes)
        return finished_chart(rows, minutes)

    # ------------------------------------------------------------ approvals

    @contextlib.asynccontextmanager
    async def _approvals(self) -> AsyncIterator[ApprovalStore]:
        with self._migrated():
            yield ApprovalStore(await self.database())

    async def approvals(self, *, state: str | None = None, task_id: int | None = None,
                        limit: int = 100) -> list[Approval]:
        """Approval requests, newest first, optionally of one state or task."""
        check_approval_state(state)
        if task_id is not None:
            check_id(task_id)
        async with self._approvals() as store:
            return await store.requests(state=state, task_id=task_id, limit=limit)

    async def approval(self, approval_id: int) -> ApprovalDetail:
        """One request and its audit trail; `NotFound` if there is none."""
        check_id(approval_id, "approval id")
        async with self._approvals() as store:
            found = await store.get(approval_id)
            history = await store.history(approval_id)
        return ApprovalDetail(approval=found, history=[TaskEvent.model_validate(h) for h in history])

    async def approve(self, approval_id: int, *, by: str) -> Approval:
        """Approve a pending request (its task runs again and the call is made once).
        `by` names the operator in the audit trail. A run never reaches this: only the
        operator's entry points (the CLI, the console) call it."""
        check_id(approval_id, "approval id")
        async with self._approvals() as store:
            done = await store.decide(approval_id, approve=True, by=check_decider(by))
            if done.kind == "budget" and done.role is not None:  # applied at once, audited
                governor = await synced_governor(self.settings, store.db, sync=False)
                await governor.set_budget("role", done.role, float(done.input["daily_usd"]),
                                          actor=done.decided_by or "operator",
                                          known_roles=role_names(self.settings.agents_dir))
                await store.use(done.id)
                done = await store.get(done.id)
            return done

    async def request_budget(self, role: str, daily_usd: float, reason: str) -> Approval:
        """`role` asks for a daily budget of `daily_usd` (a request an operator decides:
        a role never raises its own budget). For the role's own entry points (MCP)."""
        check_role(role, self.settings.agents_dir)
        amount = check_amount(daily_usd)
        if not reason.strip():
            raise UsageError("a budget request needs a reason")
        async with self._approvals() as store:
            return await store.budget_request(role=role, daily_usd=amount, reason=reason.strip(),
                                              expires_in=self.settings.approval_timeout)

    async def deny(self, approval_id: int, reason: str, *, by: str) -> Approval:
        """Deny a pending request with `reason`, which the resumed run is told."""
        check_id(approval_id, "approval id")
        async with self._approvals() as store:
            return await store.decide(approval_id, approve=False, by=check_decider(by),
                                      reason=reason)

    # ------------------------------------------------------------ the governor

    async def spend_chart(self, *, role: str | None = None) -> SpendChart:
        """Each role's cumulative spend per hour of today (the governor's day by the
        database's clock) beside its daily budget: the console's spend chart."""
        if role is not None:
            check_role(role, self.settings.agents_dir)
        governor = await self.governor(sync=False)  # a read: the agents write the defaults
        with self._migrated():
            day, hour, rows = await governor.spend_by_hour()
            budgets = {b["key"]: b["daily_usd"] for b in await governor.budgets()
                       if b["scope"] == "role"}
        return spend_chart(day, hour, governor.gate.timezone, rows, budgets, only=role)

    async def governor(self, *, sync: bool = True) -> Governor:
        """The organisation's governor, the configured budgets written (as at an agent's start)."""
        with self._migrated():
            return await synced_governor(self.settings, await self.database(), sync=sync)

    async def set_budget(self, scope: str, key: str, daily_usd: float) -> float:
        """Set the daily budget of the organisation (`org`, key ""), a role or a workflow:
        effective at the next claim on every machine, audited. Returns the amount."""
        amount = check_amount(daily_usd)
        known = role_names(self.settings.agents_dir)
        if scope == "role" and key not in known:
            raise UsageError(f"unknown role {key!r}; known roles: {', '.join(known) or 'none'}")
        governor = await self.governor()
        with self._migrated():
            await governor.set_budget(scope, key, amount, known_roles=known)
        return amount

    async def budgets(self) -> dict[str, Any]:
        """Every budget with today's spend, the pauses in force, the billing mode."""
        governor = await self.governor()
        with self._migrated():
            return {"budgets": await governor.budgets(),
                    "paused": [{"account": p.account, "until": p.until, "reason": p.reason,
                                "text": p.describe(governor.gate.timezone)}
                               for p in await governor.pauses()],
                    "billing": self.settings.claude_billing,
                    "timezone": self.settings.budget_timezone}

    async def resume_budget(self) -> bool:
        """Lift the burn-rate breaker (audited); False if it was not tripped."""
        governor = await self.governor(sync=False)
        with self._migrated():
            return await governor.resume() is not None

    async def spend_report(self, *, by: str = "role", since: str | None = None) -> SpendReport:
        """Today's spend against the budgets, what waits and why, the pauses, and the
        ledger since `since` grouped `by` role, workflow, day or account."""
        governor = await self.governor()
        with self._migrated():
            return await spend_report(governor, by=by, since=since,
                                      roles=role_names(self.settings.agents_dir))

    async def governor_summary(self) -> dict[str, Any] | None:
        """The pauses in force and why each role's Claude runs wait (for `status` and
        `echoctl claude`); None when the database is away or not started."""
        with contextlib.suppress(EchoError, TimeoutError, OSError):
            return await governor_summary(self.settings, role_names(self.settings.agents_dir))
        return None

    async def latest_message_id(self) -> int:
        """The highest message id committed (0 for none): a cheap probe of the database."""
        with self._migrated():
            return await MessageStore(await self.database()).max_id()

    # ------------------------------------------------------------ workflows

    async def live_roles(self) -> list[str]:
        """The known roles whose agent is up now (a fresh heartbeat)."""
        known = role_names(self.settings.agents_dir)
        async with self._workflows() as store:
            up = await store.up_roles()
        return [r for r in known if r in up]

    async def start_workflow(self, subject: str, *, body: str = "", sender: str = "operator",
                             rounds: int = 2, quorum: str = "majority",
                             decider_timeout: float = 30.0, phase_timeout: float = 120.0,
                             roles: list[str] | None = None, repo: str | None = None) -> Workflow:
        """Create a workflow and broadcast it to the agents that are up, who self-select.
        With `repo`, the tasks its decision creates work in that repository (each in its
        own worktree, as `submit_task(repo=...)`).

        Bad input (an unknown repository too) is refused before anything is written;
        with no agent up this raises `NoAgentsUp` (nobody would ever move it on)."""
        s = self.settings
        check_role(sender, s.agents_dir, allow=NON_AGENT_SENDERS)
        if not role_names(s.agents_dir):
            raise UsageError(f"no roles found under {s.agents_dir}; set ECHO_AGENTS_DIR")
        if quorum not in QUORUMS:
            raise UsageError(f"unknown quorum {quorum!r}; use {' or '.join(QUORUMS)}")
        if not 1 <= rounds <= 10:
            raise UsageError(f"rounds must be between 1 and 10, not {rounds}")
        check_seconds(decider_timeout, "the decider timeout", least=1)
        check_seconds(phase_timeout, "the phase timeout", least=1)
        for role in roles or ():
            check_role(role, s.agents_dir)
        if not subject.strip():  # the posted subject has the id before it: check this one
            raise UsageError("a workflow needs a subject (what the organisation should decide)")
        Message.build(from_role=sender, subject=f"[wf-0000000000] {subject}", body={"text": body},
                      max_body_bytes=s.max_body_bytes)  # InvalidMessage names the problem
        repo_payload = None
        if repo is not None:
            async with self.repos() as repos:
                repo_payload = await repos.payload(repo)
        asked = roles if roles is not None else await self.live_roles()
        if not asked:
            raise NoAgentsUp("no agent is up to take part: start the organisation with "
                             "`echoctl up --detach` (then `echoctl status`), and start the "
                             "workflow again")
        async with self._workflows() as store:
            workflow_id = await store.create(
                subject=subject, body=body, started_by=sender, roles=asked, rounds=rounds,
                quorum=quorum, decider_timeout=decider_timeout, phase_timeout=phase_timeout,
                repo=repo_payload)
            message = Message.build(
                uuid=post_uuid(workflow_id, "start"), kind=Kind.BROADCAST, from_role=sender,
                thread_id=workflow_id, subject=f"[{workflow_id}] {subject}",
                body={"workflow": workflow_id, "text": body}, max_body_bytes=s.max_body_bytes)
            published = await self._publish(message)
            await store.set_message(workflow_id, published.db_id)
            wf = await store.get(workflow_id)
        assert wf is not None
        return wf

    async def wait_workflow(self, workflow_id: str, within: float = 600.0) -> Workflow:
        """Follow a workflow until it is finished (done or cancelled); one that ends in
        `error` raises `EchoError` with its reason."""
        workflow_id = normalise_workflow_id(workflow_id)
        phase = "unknown"
        async with self._workflows() as store:
            with anyio.move_on_after(within):
                while True:
                    wf = await store.get(workflow_id)
                    if wf is None:
                        raise NotFound(f"no workflow {workflow_id!r}; `echoctl workflow list` lists them")
                    if wf.phase == Phase.ERROR:
                        raise EchoError(f"workflow {workflow_id} failed: {wf.error}; `echoctl "
                                        f"workflow show {workflow_id}` has its timeline")
                    if wf.phase.final:
                        return wf
                    phase = str(wf.phase)
                    await anyio.sleep(0.2)
        raise EchoError(
            f"workflow {workflow_id} is still {phase} after {within:g}s; are the agents up "
            f"(`echoctl status`)? `echoctl workflow show {workflow_id}` follows it")

    async def workflows(self, limit: int = 20) -> list[Workflow]:
        """Workflows, newest first."""
        async with self._workflows() as store:
            return await store.recent(limit)

    async def workflow(self, workflow_id: str) -> WorkflowDetail:
        """One workflow with its participants, thread, decision, tasks and timeline."""
        workflow_id = normalise_workflow_id(workflow_id)
        async with self._workflows() as store:
            detail = await store.detail(workflow_id)
            if any(t.status == "pending" for t in detail.tasks):  # why the governor holds them
                rows = await annotate_waiting(self.settings, store.db, [
                    {"status": t.status, "task_type": "claude", "assigned_role": t.role,
                     "workflow": workflow_id} for t in detail.tasks])
                detail.tasks = [t.model_copy(update={"waiting": r.get("waiting")})
                                for t, r in zip(detail.tasks, rows, strict=True)]
        return detail

    async def cancel_workflow(self, workflow_id: str) -> Phase:
        """Cancel an unfinished workflow; returns the phase it was in. Its pending tasks
        are left to the queue (`tasks cancel`)."""
        workflow_id = normalise_workflow_id(workflow_id)
        async with self._workflows() as store:
            before = await store.cancel(workflow_id, actor="operator")
            if before is None:
                wf = await store.get(workflow_id)
                if wf is None:
                    raise NotFound(f"no workflow {workflow_id!r}; `echoctl workflow list` lists them")
                raise UsageError(f"workflow {workflow_id} is already {wf.phase}; only an "
                                 "unfinished workflow can be cancelled")
        return before

    async def workflow_delivery(self, workflow_id: str) -> Delivery:
        """Whether a workflow's proposal was stored, announced, and who processed it."""
        async with self._workflows() as store:
            return await store.delivery(normalise_workflow_id(workflow_id))

    async def decisions(self, limit: int = 20) -> list[Decision]:
        """The decisions the CEO wrote, newest first."""
        async with self._workflows() as store:
            return await store.decisions(limit)

    # ------------------------------------------------------------ the organisation

    async def status(self, *, remote: bool = True) -> OrgStatus:
        """Each agent: role, pid, state, uptime, restarts, heartbeat age, inbox lag,
        running tasks, degraded reason. From the state directory (this machine's
        organisation) and, with `remote`, Postgres (agents on other machines)."""
        return await collect_status(self.settings, remote=remote)

    async def restart_agent(self, role: str) -> int | None:
        """Restart one agent of the running organisation (a person's restart, not a
        crash: not counted against the restart intensity). Returns its new pid."""
        load_role(self.settings.agents_dir, role)
        answer = await control.request(self.settings, {"command": "restart", "role": role})
        pid = answer.get("pid")
        return int(pid) if pid else None
