"""The CEO's driving of a workflow: phase transitions, the decision, the work.

    selecting -> discussing (round 1..rounds) -> voting -> deciding -> executing -> done

`Driver.drive` moves a workflow to the next phase once every expected part is in
or the phase deadline has passed, writes the decision (deciding) and enqueues the
tasks it names. Every transition is guarded by the (phase, round) it was read in,
so a retried or concurrent step changes nothing twice; the decision and its tasks
are written once (a unique decision per workflow, a dedupe key per task). So:

- a CEO that is down at a deadline changes nothing until it is back; then its
  first wake-up sees the deadline passed and the workflow moves on;
- a role whose agent is gone when the executing deadline passes cannot hold the
  workflow: the driver cancels that role's tasks still pending and reports them.

The driver takes its store, its `publish` function and its task queue as ports
(ports.py), so the state machine is unit-tested on the in-memory adapters (memory.py,
tests/unit/org/workflow/) besides the integration tests with Postgres and real agents.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from echo.bus import Kind, broadcast_channel, decision_channel
from echo.errors import UsageError
from echo.logs import fields
from echo.org.agent import answers, deciders
from echo.org.roles import Role
from echo.org.workflow.participant import RolePart, post_uuid, render_thread
from echo.org.workflow.ports import Publish, TaskPort, WorkflowPort
from echo.org.workflow.store import Decision, Phase, TaskOutcome, Workflow
from echo.work import NewTask

log = logging.getLogger(__name__)
#: The role whose agent drives every workflow.
DRIVER = "ceo"
QUORUMS = ("majority", "unanimous")


def consensus(votes: dict[str, str], participants: Sequence[str], quorum: str) -> str:
    """approved / rejected by the quorum rule, else escalated (a tie, missing votes)."""
    n = len(participants)
    yes = sum(votes.get(r) == "approve" for r in participants)
    no = sum(votes.get(r) == "reject" for r in participants)
    if quorum == "unanimous":
        return "approved" if n and yes == n else "rejected" if n and no == n else "escalated"
    return "approved" if yes * 2 > n else "rejected" if no * 2 > n else "escalated"


class Driver(RolePart):
    """The CEO's part: its own (as a participant) plus moving every workflow on."""

    def __init__(self, role: Role, store: WorkflowPort, publish: Publish, queue: TaskPort, *,
                 roles: dict[str, Role], decider: deciders.ClaudeDecider | None = None) -> None:
        super().__init__(role, store, publish, decider=decider)
        self.queue: TaskPort = queue
        self.roles = roles
        #: Moves committed whose announcement (which wakes every agent) has not gone out
        #: yet: workflow id -> (phase, round, consensus). The next drive makes it first.
        self._unannounced: dict[str, tuple[Phase, int, str | None]] = {}

    async def advance(self, wf: Workflow, phase: Phase, round_no: int = 0,
                      agreed: str | None = None) -> bool:
        """Move `wf` on (once) and announce the new phase to every role."""
        moved = await self.store.advance(wf, phase, round_no, agreed, actor=self.role.name)
        if moved:
            log.info("workflow %s: %s -> %s %s", wf.id, wf.phase, phase, round_no or "",
                     extra=fields(role=self.role.name, workflow=wf.id, step="advance", outcome=str(phase),
                                  round=round_no or None))
            if phase != Phase.DONE:
                self._unannounced[wf.id] = (phase, round_no, agreed)
                await self.announce(wf.id)
        return moved

    async def announce(self, wf_id: str) -> None:
        """Post the announcement of `wf_id`'s last move, if it has not gone out: once (its
        uuid is the phase's), however often an outage interrupted it."""
        pending = self._unannounced.get(wf_id)
        if pending is None:
            return
        phase, round_no, agreed = pending
        what = f"discussion round {round_no}" if phase == Phase.DISCUSSING else str(phase)
        await self.post(wf_id, post_uuid(wf_id, "phase", str(phase), round_no), Kind.STATUS,
                        what, {"phase": str(phase), "round": round_no, "consensus": agreed},
                        channel=broadcast_channel())
        if self._unannounced.get(wf_id) == pending:
            del self._unannounced[wf_id]

    async def drive(self, wf: Workflow) -> None:
        """Move `wf` on if its current phase is complete or overdue (announcing its last
        move first, if an outage kept that from going out)."""
        if self._unannounced.get(wf.id, (None,))[0] == wf.phase:
            await self.announce(wf.id)
        else:
            self._unannounced.pop(wf.id, None)  # moved on since (or cancelled): obsolete
        rows = await self.store.participants(wf.id)
        taking = [p.role for p in rows if p.participate]
        if wf.phase == Phase.SELECTING:
            if wf.overdue or set(wf.roles) <= {p.role for p in rows}:
                if taking:
                    await self.advance(wf, Phase.DISCUSSING, 1)
                else:
                    await self.advance(wf, Phase.DECIDING, 0, "escalated")
        elif wf.phase == Phase.DISCUSSING:
            thread = await self.store.thread(wf.id)
            posted = {m.from_role for m in thread if m.kind == Kind.DISCUSSION
                      and isinstance(m.body, dict) and m.body.get("round") == wf.round}
            if wf.overdue or set(taking) <= posted:
                if wf.round < wf.rounds:
                    await self.advance(wf, Phase.DISCUSSING, wf.round + 1)
                else:
                    await self.advance(wf, Phase.VOTING, 0)
        elif wf.phase == Phase.VOTING:
            votes = _votes(await self.store.thread(wf.id))
            if wf.overdue or set(taking) <= set(votes):
                await self.advance(wf, Phase.DECIDING, 0, consensus(votes, taking, wf.quorum))
        elif wf.phase == Phase.DECIDING:
            await self.decide(wf, taking)
        elif wf.phase == Phase.EXECUTING:
            await self.finish_if_done(wf)

    async def decide(self, wf: Workflow, taking: list[str]) -> None:
        """Write the decision (once), enqueue its tasks (once), announce it, move on."""
        decision = await self.store.decision_of(wf.id)
        if decision is None:
            thread = await self.store.thread(wf.id)
            votes = _votes(thread)
            tally = {"approve": sum(v == "approve" for v in votes.values()),
                     "reject": sum(v == "reject" for v in votes.values())}
            names = [r for r in self.roles if r in wf.roles] or list(self.roles)
            agreed = wf.consensus or "escalated"
            prompt = answers.render("decide", **self.values(
                wf, consensus=agreed, tally=f"{tally['approve']} approve, {tally['reject']} reject",
                thread=render_thread(thread), roles=", ".join(names)))
            approvers = [self.roles[r] for r in taking if r in self.roles and votes.get(r) != "reject"]
            got = await deciders.answer(
                self.decider, prompt, wf.decider_timeout,
                lambda d: answers.check_decision(d, names),
                lambda: answers.template_decision(wf.subject, agreed, tally, approvers),
                workflow=wf.id, step="decide")
            decision = await self.store.decide(
                wf.id, actor=self.role.name, outcome=got.data["outcome"], consensus=agreed,
                summary=got.data["summary"], source=got.source, fallback_reason=got.fallback_reason,
                tasks=list(got.data["tasks"]))
        tasks = await self.enqueue(wf, decision)
        await self.post(wf.id, post_uuid(wf.id, "decision"), Kind.DECISION,
                        f"decision: {decision.outcome}",
                        {"decision": decision.id, "outcome": decision.outcome,
                         "summary": decision.summary, "tasks": tasks, "source": decision.source},
                        channel=decision_channel(decision.id))
        await self.advance(wf, Phase.EXECUTING if tasks else Phase.DONE, 0)

    async def enqueue(self, wf: Workflow, decision: Decision) -> list[dict[str, Any]]:
        """The decision's tasks, each enqueued once (a dedupe key per task, looked up
        in any status first, so a CEO restarted half-way enqueues nothing twice); a
        workflow started with a repository gives each task that repository."""
        tasks = list(decision.tasks)
        if not tasks or all(t.get("task_id") for t in tasks):
            return tasks
        keys = [f"{wf.id}:task:{i}" for i in range(len(tasks))]
        known = await self.store.tasks_by_key(keys)
        new = [NewTask(t["description"], task_type="claude", role=t["role"], dedupe_key=key,
                       max_retries=1,
                       payload={"workflow": wf.id, "decision": decision.id,
                                "prompt": f"{t['description']}\n\nThis task follows the decision on "
                                          f"'{wf.subject}': {decision.summary}",
                                **({"repo": wf.repo} if wf.repo else {})})
               for t, key in zip(tasks, keys, strict=True) if key not in known]
        made = await self.queue.enqueue_many(new)
        known.update({t.dedupe_key: e.task_id for t, e in zip(new, made, strict=True) if t.dedupe_key})
        tasks = [{**t, "task_id": known[key]} for t, key in zip(tasks, keys, strict=True)]
        await self.store.set_decision_tasks(decision.id, tasks, actor=self.role.name)
        return tasks

    async def finish_if_done(self, wf: Workflow) -> None:
        """`done` once every task is final and reported."""
        outcomes = await self.store.decision_tasks(wf.id)
        if wf.overdue and outcomes:
            outcomes = await self.settle_orphans(wf, outcomes)
        if not all(t.final for t in outcomes):
            return
        for t in outcomes:
            if not await self.store.posted(post_uuid(wf.id, "task", t.task_id)):
                return
        await self.advance(wf, Phase.DONE, 0)

    async def settle_orphans(self, wf: Workflow, outcomes: list[TaskOutcome]) -> list[TaskOutcome]:
        """Past the executing deadline, the tasks of roles with no live agent are
        settled by the driver, so a role that never comes back cannot hold the workflow:
        one still pending is cancelled, and a final one nobody reported is reported.
        A role whose agent is up keeps its tasks: they are queued or running, and a
        running task ends by its own timeout."""
        live = await self.store.up_roles()
        settled = []
        for task in outcomes:
            if task.role not in live and task.status == "pending":
                with contextlib.suppress(UsageError):  # claimed or ended meanwhile: let it be
                    await self.queue.cancel(task.task_id, actor=self.role.name)
                [task] = await self.store.tasks([task.task_id])
            key = post_uuid(wf.id, "task", task.task_id)
            if task.role not in live and task.final and not await self.store.posted(key):
                told = task.model_copy(update={
                    "note": f"no {task.role} agent was up by the executing deadline; "
                            f"settled by the {self.role.name}"})
                await self.post(wf.id, key, Kind.STATUS, f"task {task.task_id} {task.status}",
                                {"task": told.report()})
            settled.append(task)
        return settled


def _votes(thread: Sequence[Any]) -> dict[str, str]:
    return {m.from_role: str(m.body.get("vote")) for m in thread
            if m.kind == Kind.VOTE and isinstance(m.body, dict)}
