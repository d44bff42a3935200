"""The collaborative workflow: self-selection, discussion, consensus, CEO synthesis.

The state machine lives in Postgres (`workflows`, shared/sql/006_workflow.sql):

    selecting -> discussing (round 1..rounds) -> voting -> deciding -> executing -> done

Who does what. Every agent runs a `WorkflowAgent` that, on each wake-up, reads the
open workflows and does ITS OWN missing part of the current phase: record whether
it takes part (selecting), post its position for the round (discussing), vote
(voting), report the results of its tasks (executing). The CEO's agent also drives:
it moves a workflow to the next phase once every expected part is in or the phase
deadline has passed, writes the decision (deciding) and enqueues the tasks it
names. Nothing is held in memory between wake-ups, so:

- a participant that crashes is restarted by its supervisor, reads the state again
  and does what it had not done (each part is idempotent: a participant row has a
  primary key, a post's uuid is derived from workflow, role and step);
- a CEO that is down at a deadline changes nothing until it is back; then its
  first wake-up sees the deadline passed and the workflow moves on;
- a role whose agent is gone when the executing deadline passes cannot hold the
  workflow: the CEO cancels that role's tasks still pending and reports them.

Failures follow the failure model (echo/errors.py). The database unavailable
(`StoreUnavailable`): the whole tick is deferred, and the agent reports degraded
until a tick succeeds. Postgres refusing a statement of one workflow (`StoreRejected`:
bad data, a constraint): that workflow is marked `error` with the reason (shown by
`echoctl workflow show`) and leaves the open set; the others go on in the same tick.
Any other exception (a bug) is logged with its traceback and retried at the next tick,
for that workflow only. One broken workflow never stops the others, nor crash-loops
the agent.

Wake-ups: the `Participant` kicks the workflow agent when a message of a workflow
lands (the start broadcast, the CEO's phase announcements on `messages:all`), and a
tick (`settings.poll_interval`) covers deadlines and posts on `workflow:<id>`.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import asyncpg
from anyio.abc import TaskStatus

from echo import db
from echo.bus import Kind, Message, Publisher, StoredMessage, decision_channel, workflow_channel
from echo.config import Settings
from echo.degradation import Condition, Reporter
from echo.errors import StoreRejected, StoreUnavailable, UsageError
from echo.logs import fields
from echo.org import deciders
from echo.org.roles import Role, load_roles
from echo.work import NewTask, TaskQueue
from echo.work.executors import Executor, Result
from echo.work.queue import FINAL_STATUSES, Task

log = logging.getLogger(__name__)
Q = db.load_queries("workflow")
DRIVER = "ceo"
QUORUMS = ("majority", "unanimous")
SKIPPED = "skipped: claude unavailable"


def post_uuid(workflow_id: str, *step: object) -> uuid.UUID:
    """The uuid of one post: the same step posted twice is one row (ON CONFLICT)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "echo-workflow:" + ":".join([workflow_id, *map(str, step)]))


def consensus(votes: dict[str, str], participants: Sequence[str], quorum: str) -> str:
    """approved / rejected by the quorum rule, else escalated (a tie, missing votes)."""
    n = len(participants)
    yes = sum(votes.get(r) == "approve" for r in participants)
    no = sum(votes.get(r) == "reject" for r in participants)
    if quorum == "unanimous":
        return "approved" if n and yes == n else "rejected" if n and no == n else "escalated"
    return "approved" if yes * 2 > n else "rejected" if no * 2 > n else "escalated"


def describe_task(row: Any) -> dict[str, Any]:
    """A task as the workflow reports it: a failure because Claude is unavailable is
    `skipped` with its reason, never `completed`."""
    status, error = row["status"], row["error"] or ""
    out: dict[str, Any] = {"task_id": row["task_id"], "role": row["assigned_role"],
                           "description": row["task_description"], "status": status}
    if status == "failed" and error.startswith(SKIPPED):
        out["status"] = "skipped"
    if error:
        out["error"] = error[:1000]
    result = row["result"]
    if isinstance(result, dict) and "result" in result:
        out["result"] = str(result["result"])[:2000]
    elif result is not None:
        out["result"] = result
    return out


class SkipWhenUnavailable:
    """Wraps a role's Claude executor: a workflow task that cannot run because Claude
    is not installed, not logged in or out of credit fails (not retried) as
    `skipped: claude unavailable (REASON)`; it is never recorded as done."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner

    async def execute(self, task: Task) -> Result:
        try:
            return await self.inner.execute(task)
        except deciders.CLAUDE_UNAVAILABLE as exc:
            if "workflow" not in task.payload:
                raise
            raise type(exc)(f"{SKIPPED} ({exc})") from exc


@dataclass(frozen=True)
class Started:
    workflow_id: str
    message_id: int
    roles: list[str]


async def start(database: db.Database, *, subject: str, body: str = "", started_by: str = "operator",
                roles: Sequence[str], rounds: int = 2, quorum: str = "majority",
                decider_timeout: float = 30.0, phase_timeout: float = 120.0) -> Started:
    """Create a workflow and broadcast it; `roles` are asked to self-select (the agents
    that are up: `live_roles`). Bad input is refused before anything is written."""
    if quorum not in QUORUMS:
        raise UsageError(f"unknown quorum {quorum!r}; use {' or '.join(QUORUMS)}")
    Message.build(from_role=started_by, subject=f"[wf-0000000000] {subject}", body={"text": body},
                  max_body_bytes=database.settings.max_body_bytes)  # InvalidMessage names the problem
    async with database.transaction() as conn:
        await conn.execute(Q["set_actor"], started_by)
        workflow_id = await conn.fetchval(Q["create"], subject, body, started_by, list(roles),
                                          rounds, quorum, decider_timeout, phase_timeout)
    message = Message.build(
        uuid=post_uuid(workflow_id, "start"), kind=Kind.BROADCAST, from_role=started_by,
        thread_id=workflow_id, subject=f"[{workflow_id}] {subject}",
        body={"workflow": workflow_id, "text": body}, max_body_bytes=database.settings.max_body_bytes)
    async with Publisher(database) as pub:
        published = await pub.publish(message)
    async with database.acquire() as conn:
        await conn.execute(Q["set_message"], workflow_id, published.db_id)
    return Started(workflow_id, published.db_id, list(roles))


#: An agent is up when its heartbeat is this recent (seconds).
LIVE_WITHIN = 10.0


async def up_roles(database: db.Database, *, fresh: float = LIVE_WITHIN) -> set[str]:
    """The roles whose agent is up now: a heartbeat within `fresh` seconds."""
    async with database.acquire() as conn:
        return {r["role"] for r in await conn.fetch(Q["live_roles"], fresh)}


async def live_roles(database: db.Database, known: Sequence[str], *, fresh: float = LIVE_WITHIN) -> list[str]:
    """The known roles whose agent is up, else every known role (who to ask to take part:
    with no heartbeat anywhere yet, everyone)."""
    up = await up_roles(database, fresh=fresh)
    return [r for r in known if r in up] or list(known)


class WorkflowAgent:
    """One role's part in every open workflow; the CEO's also drives the phases."""

    def __init__(self, settings: Settings, database: db.Database, role: Role, *,
                 decider: deciders.ClaudeDecider | None = None, listener: Any = None,
                 tick: float | None = None, reporter: Reporter | None = None) -> None:
        self.settings = settings
        self.db = database
        self.role = role
        self.decider = decider
        self.listener = listener
        self.tick = tick if tick is not None else settings.poll_interval
        self.queue = TaskQueue(database)
        self.pub: Publisher | None = None
        self.condition = Condition("workflow", reporter, log)
        self._failed: str | None = None  # a workflow's step failed (a bug) this tick
        self._wake = anyio.Event()

    @property
    def last_error(self) -> str | None:
        return self.condition.last_error

    def kick(self) -> None:
        """Look at the workflows now (a message of a workflow has landed)."""
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with Publisher(self.db, listener=self.listener) as pub:
            self.pub = pub
            task_status.started()
            while True:
                self._wake = anyio.Event()
                try:
                    self._failed = None
                    await self.step()
                    if self._failed:
                        self.condition.trouble(self._failed)
                    else:
                        self.condition.ok()
                except StoreUnavailable as exc:
                    self.condition.trouble(str(exc))  # the whole tick waits for the database
                with anyio.move_on_after(self.tick):
                    await self._wake.wait()

    async def step(self) -> None:
        async with self.db.acquire() as conn:
            rows = await conn.fetch(Q["open"])
        for row in rows:
            try:
                await self.my_part(row)
                if self.role.name == DRIVER:
                    await self.drive(row)
            except StoreUnavailable:
                raise  # the database, not this workflow: the whole tick waits
            except StoreRejected as exc:
                await self._mark_error(row, exc)
            except Exception as exc:  # one broken workflow must not stop the others or the agent
                self._failed = f"{row['id']}: {type(exc).__name__}: {exc}"
                log.exception("%s: workflow %s failed a step; retrying at the next tick",
                              self.role.name, row["id"])

    async def _mark_error(self, wf: Any, exc: StoreRejected) -> None:
        """Postgres refuses this workflow's step and will refuse it again: mark the
        workflow `error` with the reason, so no agent retries it every tick."""
        reason = f"{self.role.name} could not do its part of {wf['phase']}: {exc}"
        log.error("workflow %s: %s; marked error", wf["id"], reason)
        try:
            async with self.db.transaction() as conn:
                await conn.execute(Q["set_actor"], self.role.name)
                await conn.fetchval(Q["mark_error"], wf["id"], wf["phase"], reason[:4000])
        except StoreRejected as again:  # cannot even mark it: leave it to the next tick
            log.error("workflow %s: cannot mark it error either: %s", wf["id"], again)

    # ------------------------------------------------------------ reading the state

    async def _participants(self, wf_id: str) -> list[asyncpg.Record]:
        async with self.db.acquire() as conn:
            return list(await conn.fetch(Q["participants"], wf_id))

    async def _thread(self, wf_id: str) -> list[StoredMessage]:
        async with self.db.acquire() as conn:
            return [StoredMessage.from_row(r) for r in await conn.fetch(Q["thread"], wf_id)]

    async def _posted(self, key: uuid.UUID) -> bool:
        async with self.db.acquire() as conn:
            return bool(await conn.fetchval(Q["message_exists"], key))

    async def _post(self, wf_id: str, key: uuid.UUID, kind: Kind, subject: str, body: dict[str, Any],
                    channel: str | None = None) -> None:
        assert self.pub is not None, "run() first"
        await self.pub.publish(Message.build(
            uuid=key, channel=channel or workflow_channel(wf_id), kind=kind,
            from_role=self.role.name, thread_id=wf_id, subject=f"[{wf_id}] {subject}",
            body={"workflow": wf_id, **body}))

    @staticmethod
    def _render_thread(thread: list[StoredMessage]) -> str:
        lines = []
        for m in thread:
            body = m.body if isinstance(m.body, dict) else {}
            said = body.get("position") or (f"votes {body['vote']}: {body.get('reason', '')}"
                                             if "vote" in body else None)
            if said and m.kind in (Kind.DISCUSSION, Kind.VOTE):
                lines.append(f"- {m.from_role} (round {body.get('round', '-')}): {said}")
        return "\n".join(lines) or "(none yet)"

    def _values(self, wf: Any, **more: object) -> dict[str, object]:
        return {"title": self.role.title, "subject": wf["subject"], "body": wf["body"] or "(none)",
                "responsibilities": "\n".join(f"- {r}" for r in self.role.responsibilities),
                "rounds": wf["rounds"], **more}

    # ------------------------------------------------------------ my own part

    async def my_part(self, wf: Any) -> None:
        me, wf_id, phase = self.role.name, wf["id"], wf["phase"]
        mine = {p["role"]: p for p in await self._participants(wf_id)}
        if phase == "selecting":
            if me in wf["roles"] and me not in mine:
                await self.select(wf)
            return
        taking_part = me in mine and mine[me]["participate"]
        if phase == "discussing" and taking_part:
            key = post_uuid(wf_id, me, "position", wf["round"])
            if not await self._posted(key):
                await self.discuss(wf, key)
        elif phase == "voting" and taking_part:
            key = post_uuid(wf_id, me, "vote")
            if not await self._posted(key):
                await self.vote(wf, key)
        elif phase == "executing":
            await self.report_tasks(wf)

    async def select(self, wf: Any) -> None:
        got = await deciders.answer(
            self.decider, deciders.render("select", **self._values(wf)), wf["decider_timeout"],
            deciders.check_select, lambda: deciders.keyword_select(self.role, wf["subject"], wf["body"]))
        async with self.db.transaction() as conn:
            await conn.execute(Q["set_actor"], self.role.name)
            await conn.execute(Q["record_participant"], wf["id"], self.role.name,
                               got.data["participate"], got.data["confidence"], got.data["reason"],
                               got.decider, got.fallback_reason)
        joins = "joins" if got.data["participate"] else "declines"
        log.info("%s: %s %s (%s)", self.role.name, joins, wf["id"], got.decider,
                 extra=fields(role=self.role.name, workflow=wf["id"], step="select", outcome=joins,
                              source=got.source))

    async def discuss(self, wf: Any, key: uuid.UUID) -> None:
        thread = await self._thread(wf["id"])
        others = sorted({m.from_role for m in thread
                         if m.kind == Kind.DISCUSSION and m.from_role != self.role.name})
        prompt = deciders.render("position", **self._values(
            wf, round=wf["round"], thread=self._render_thread(thread)))
        got = await deciders.answer(
            self.decider, prompt, wf["decider_timeout"], deciders.check_position,
            lambda: deciders.template_position(self.role, wf["subject"], wf["round"], others))
        await self._post(wf["id"], key, Kind.DISCUSSION, f"{self.role.title}, round {wf['round']}",
                         {"round": wf["round"], **got.data, "source": got.source,
                          "fallback_reason": got.fallback_reason})
        log.info("%s: position posted on %s, round %s", self.role.name, wf["id"], wf["round"],
                 extra=fields(role=self.role.name, workflow=wf["id"], step="discuss", round=wf["round"],
                              source=got.source))

    async def vote(self, wf: Any, key: uuid.UUID) -> None:
        thread = await self._thread(wf["id"])
        prompt = deciders.render("vote", **self._values(wf, thread=self._render_thread(thread)))
        got = await deciders.answer(
            self.decider, prompt, wf["decider_timeout"], deciders.check_vote,
            lambda: deciders.template_vote(self.role, wf["subject"], wf["body"]))
        await self._post(wf["id"], key, Kind.VOTE, f"{self.role.title} votes {got.data['vote']}",
                         {**got.data, "source": got.source, "fallback_reason": got.fallback_reason})
        log.info("%s: votes %s on %s", self.role.name, got.data["vote"], wf["id"],
                 extra=fields(role=self.role.name, workflow=wf["id"], step="vote", outcome=got.data["vote"],
                              source=got.source))

    async def report_tasks(self, wf: Any) -> None:
        """Post the outcome of each of this role's tasks once it is final."""
        async with self.db.acquire() as conn:
            decision = await conn.fetchrow(Q["decision_of"], wf["id"])
            ids = [t["task_id"] for t in (decision["tasks"] if decision else [])
                   if t.get("role") == self.role.name and t.get("task_id")]
            rows = await conn.fetch(Q["tasks"], ids) if ids else []
        for row in rows:
            if row["status"] not in FINAL_STATUSES:
                continue
            key = post_uuid(wf["id"], "task", row["task_id"])
            if not await self._posted(key):
                told = describe_task(row)
                await self._post(wf["id"], key, Kind.STATUS, f"task {row['task_id']} {told['status']}",
                                 {"task": told})
                log.info("%s: task %s %s, reported on %s", self.role.name, row["task_id"], told["status"],
                         wf["id"], extra=fields(role=self.role.name, workflow=wf["id"], step="report",
                                                task=row["task_id"], outcome=told["status"]))

    # ------------------------------------------------------------ driving (the CEO)

    async def _advance(self, wf: Any, phase: str, round_no: int = 0, agreed: str | None = None) -> bool:
        async with self.db.transaction() as conn:
            await conn.execute(Q["set_actor"], self.role.name)
            moved = await conn.fetchval(Q["advance"], wf["id"], wf["phase"], wf["round"], phase,
                                        round_no, agreed)
        if moved and phase != "done":
            what = f"discussion round {round_no}" if phase == "discussing" else phase
            await self._post(wf["id"], post_uuid(wf["id"], "phase", phase, round_no), Kind.STATUS,
                             what, {"phase": phase, "round": round_no, "consensus": agreed},
                             channel="messages:all")
        if moved:
            log.info("workflow %s: %s -> %s %s", wf["id"], wf["phase"], phase, round_no or "",
                     extra=fields(role=self.role.name, workflow=wf["id"], step="advance", outcome=phase,
                                  round=round_no or None))
        return bool(moved)

    async def drive(self, wf: Any) -> None:
        phase, overdue = wf["phase"], wf["overdue"]
        rows = await self._participants(wf["id"])
        taking = [p["role"] for p in rows if p["participate"]]
        if phase == "selecting":
            if overdue or set(wf["roles"]) <= {p["role"] for p in rows}:
                if taking:
                    await self._advance(wf, "discussing", 1)
                else:
                    await self._advance(wf, "deciding", 0, "escalated")
            return
        if phase in ("discussing", "voting"):
            thread = await self._thread(wf["id"])
            if phase == "discussing":
                posted = {m.from_role for m in thread if m.kind == Kind.DISCUSSION
                          and isinstance(m.body, dict) and m.body.get("round") == wf["round"]}
                if overdue or set(taking) <= posted:
                    if wf["round"] < wf["rounds"]:
                        await self._advance(wf, "discussing", wf["round"] + 1)
                    else:
                        await self._advance(wf, "voting", 0)
            else:
                votes = {m.from_role: str(m.body.get("vote")) for m in thread
                         if m.kind == Kind.VOTE and isinstance(m.body, dict)}
                if overdue or set(taking) <= set(votes):
                    await self._advance(wf, "deciding", 0, consensus(votes, taking, wf["quorum"]))
            return
        if phase == "deciding":
            await self.decide(wf, taking)
        elif phase == "executing":
            await self._finish_if_done(wf)

    async def decide(self, wf: Any, taking: list[str]) -> None:
        """Write the decision (once), enqueue its tasks (once), announce it, move on."""
        wf_id = wf["id"]
        async with self.db.acquire() as conn:
            decision: Any = await conn.fetchrow(Q["decision_of"], wf_id)
        if decision is None:
            thread = await self._thread(wf_id)
            votes = {m.from_role: m.body.get("vote") for m in thread
                     if m.kind == Kind.VOTE and isinstance(m.body, dict)}
            tally = {"approve": sum(v == "approve" for v in votes.values()),
                     "reject": sum(v == "reject" for v in votes.values())}
            roles = load_roles(self.settings.agents_dir)
            names = [r for r in roles if r in wf["roles"]] or list(roles)
            agreed = wf["consensus"] or "escalated"
            prompt = deciders.render("decide", **self._values(
                wf, consensus=agreed, tally=f"{tally['approve']} approve, {tally['reject']} reject",
                thread=self._render_thread(thread), roles=", ".join(names)))
            approvers = [roles[r] for r in taking if r in roles and votes.get(r) != "reject"]
            got = await deciders.answer(
                self.decider, prompt, wf["decider_timeout"],
                lambda d: deciders.check_decision(d, names),
                lambda: deciders.template_decision(wf["subject"], agreed, tally, approvers))
            async with self.db.transaction() as conn:
                await conn.execute(Q["set_actor"], self.role.name)
                await conn.execute(Q["insert_decision"], wf_id, self.role.name, got.data["outcome"],
                                   agreed, got.data["summary"], got.source, got.fallback_reason)
                decision = await conn.fetchrow(Q["decision_of"], wf_id)
                if got.data["tasks"] and not decision["tasks"]:
                    await conn.execute(Q["set_decision_tasks"], decision["id"], got.data["tasks"])
                    decision = await conn.fetchrow(Q["decision_of"], wf_id)
        tasks = await self._enqueue(wf, decision)
        await self._post(wf_id, post_uuid(wf_id, "decision"), Kind.DECISION,
                         f"decision: {decision['outcome']}",
                         {"decision": decision["id"], "outcome": decision["outcome"],
                          "summary": decision["summary"], "tasks": tasks, "source": decision["source"]},
                         channel=decision_channel(decision["id"]))
        await self._advance(wf, "executing" if tasks else "done", 0)

    async def _enqueue(self, wf: Any, decision: Any) -> list[dict[str, Any]]:
        """The decision's tasks, each enqueued once (a dedupe key per task, looked up
        in any status first, so a CEO restarted half-way enqueues nothing twice)."""
        tasks = list(decision["tasks"])
        if not tasks or all(t.get("task_id") for t in tasks):
            return tasks
        keys = [f"{wf['id']}:task:{i}" for i in range(len(tasks))]
        async with self.db.acquire() as conn:
            known = {r["dedupe_key"]: r["task_id"] for r in await conn.fetch(Q["tasks_by_key"], keys)}
        new = [NewTask(t["description"], task_type="claude", role=t["role"], dedupe_key=key,
                       max_retries=1,
                       payload={"workflow": wf["id"], "decision": decision["id"],
                                "prompt": f"{t['description']}\n\nThis task follows the decision on "
                                          f"'{wf['subject']}': {decision['summary']}"})
               for t, key in zip(tasks, keys, strict=True) if key not in known]
        made = await self.queue.enqueue_many(new)
        known.update({t.dedupe_key: e.task_id for t, e in zip(new, made, strict=True) if t.dedupe_key})
        tasks = [{**t, "task_id": known[key]} for t, key in zip(tasks, keys, strict=True)]
        async with self.db.transaction() as conn:
            await conn.execute(Q["set_actor"], self.role.name)
            await conn.execute(Q["set_decision_tasks"], decision["id"], tasks)
        return tasks

    async def _finish_if_done(self, wf: Any) -> None:
        async with self.db.acquire() as conn:
            decision = await conn.fetchrow(Q["decision_of"], wf["id"])
            ids = [t["task_id"] for t in decision["tasks"] if t.get("task_id")] if decision else []
            rows = await conn.fetch(Q["tasks"], ids) if ids else []
        if wf["overdue"] and rows:
            rows = await self._settle_orphans(wf, rows)
        if any(r["status"] not in FINAL_STATUSES for r in rows):
            return
        for row in rows:
            if not await self._posted(post_uuid(wf["id"], "task", row["task_id"])):
                return
        await self._advance(wf, "done", 0)

    async def _settle_orphans(self, wf: Any, rows: list[Any]) -> list[Any]:
        """Past the executing deadline, the tasks of roles with no live agent are
        settled by the CEO, so a role that never comes back cannot hold the workflow:
        one still pending is cancelled, and a final one nobody reported is reported.
        A role whose agent is up keeps its tasks: they are queued or running, and a
        running task ends by its own timeout."""
        live = await up_roles(self.db)
        settled = []
        for row in rows:
            role = row["assigned_role"]
            if role not in live and row["status"] == "pending":
                with contextlib.suppress(UsageError):  # claimed or ended meanwhile: let it be
                    await self.queue.cancel(row["task_id"], actor=self.role.name)
                async with self.db.acquire() as conn:
                    [row] = await conn.fetch(Q["tasks"], [row["task_id"]])
            key = post_uuid(wf["id"], "task", row["task_id"])
            if role not in live and row["status"] in FINAL_STATUSES and not await self._posted(key):
                told = describe_task(row)
                told["note"] = (f"no {role} agent was up by the executing deadline; "
                                f"settled by the {self.role.name}")
                await self._post(wf["id"], key, Kind.STATUS,
                                 f"task {row['task_id']} {told['status']}", {"task": told})
            settled.append(row)
        return settled
