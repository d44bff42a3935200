"""A role's own part in a workflow: take part or not, post positions, vote, report work.

On each wake-up the workflow agent hands every open workflow to `RolePart.my_part`,
which does THIS role's missing part of the current phase and nothing else:

    selecting   record whether it takes part (keyword or LLM decider)
    discussing  post its position for the round
    voting      post its vote
    executing   report each of its tasks once the task is final

Nothing is held in memory between calls, and every part is idempotent: a
participant row has a primary key, a post's uuid is derived from workflow, role
and step (`post_uuid`). A participant that crashed and was restarted reads the
state again and does what it had not done.

Everything goes through a `WorkflowPort` and a `Publish` function (ports.py), so the
unit tests run this on the in-memory adapters (memory.py), without Postgres.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from echo.bus import Kind, Message, StoredMessage, workflow_channel
from echo.logs import fields
from echo.org.agent import answers, deciders
from echo.org.roles import Role
from echo.org.workflow.ports import Publish, WorkflowPort
from echo.org.workflow.store import Phase, Workflow

log = logging.getLogger(__name__)


def post_uuid(workflow_id: str, *step: object) -> uuid.UUID:
    """The uuid of one post: the same step posted twice is one row (ON CONFLICT)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "echo-workflow:" + ":".join([workflow_id, *map(str, step)]))


def render_thread(thread: list[StoredMessage]) -> str:
    """The positions and votes so far, one line each, for a prompt."""
    lines = []
    for m in thread:
        body = m.body if isinstance(m.body, dict) else {}
        said = body.get("position") or (f"votes {body['vote']}: {body.get('reason', '')}"
                                         if "vote" in body else None)
        if said and m.kind in (Kind.DISCUSSION, Kind.VOTE):
            lines.append(f"- {m.from_role} (round {body.get('round', '-')}): {said}")
    return "\n".join(lines) or "(none yet)"


class RolePart:
    """One role's part in every open workflow."""

    def __init__(self, role: Role, store: WorkflowPort, publish: Publish, *,
                 decider: deciders.ClaudeDecider | None = None) -> None:
        self.role = role
        self.store: WorkflowPort = store
        self.publish: Publish = publish
        self.decider = decider

    async def post(self, wf_id: str, key: uuid.UUID, kind: Kind, subject: str,
                   body: dict[str, Any], channel: str | None = None) -> None:
        await self.publish(Message.build(
            uuid=key, channel=channel or workflow_channel(wf_id), kind=kind,
            from_role=self.role.name, thread_id=wf_id, subject=f"[{wf_id}] {subject}",
            body={"workflow": wf_id, **body}))

    def values(self, wf: Workflow, **more: object) -> dict[str, object]:
        """What the prompt templates are filled with."""
        return {"title": self.role.title, "subject": wf.subject, "body": wf.body or "(none)",
                "responsibilities": "\n".join(f"- {r}" for r in self.role.responsibilities),
                "rounds": wf.rounds, **more}

    async def my_part(self, wf: Workflow) -> None:
        """Do this role's missing part of `wf`'s current phase, if any."""
        me = self.role.name
        mine = {p.role: p for p in await self.store.participants(wf.id)}
        if wf.phase == Phase.SELECTING:
            if me in wf.roles and me not in mine:
                await self.select(wf)
            return
        taking_part = me in mine and mine[me].participate
        if wf.phase == Phase.DISCUSSING and taking_part:
            key = post_uuid(wf.id, me, "position", wf.round)
            if not await self.store.posted(key):
                await self.discuss(wf, key)
        elif wf.phase == Phase.VOTING and taking_part:
            key = post_uuid(wf.id, me, "vote")
            if not await self.store.posted(key):
                await self.vote(wf, key)
        elif wf.phase == Phase.EXECUTING:
            await self.report_tasks(wf)

    async def select(self, wf: Workflow) -> None:
        got = await deciders.answer(
            self.decider, answers.render("select", **self.values(wf)), wf.decider_timeout,
            answers.check_select, lambda: answers.keyword_select(self.role, wf.subject, wf.body),
            workflow=wf.id, step="select")
        await self.store.record_participant(
            wf.id, self.role.name, participate=got.data["participate"],
            confidence=got.data["confidence"], reason=got.data["reason"], decider=got.decider,
            fallback_reason=got.fallback_reason)
        joins = "joins" if got.data["participate"] else "declines"
        log.info("%s: %s %s (%s)", self.role.name, joins, wf.id, got.decider,
                 extra=fields(role=self.role.name, workflow=wf.id, step="select", outcome=joins,
                              source=got.source))

    async def discuss(self, wf: Workflow, key: uuid.UUID) -> None:
        thread = await self.store.thread(wf.id)
        others = sorted({m.from_role for m in thread
                         if m.kind == Kind.DISCUSSION and m.from_role != self.role.name})
        prompt = answers.render("position", **self.values(
            wf, round=wf.round, thread=render_thread(thread)))
        got = await deciders.answer(
            self.decider, prompt, wf.decider_timeout, answers.check_position,
            lambda: answers.template_position(self.role, wf.subject, wf.round, others),
            workflow=wf.id, step="position")
        await self.post(wf.id, key, Kind.DISCUSSION, f"{self.role.title}, round {wf.round}",
                        {"round": wf.round, **got.data, "source": got.source,
                         "fallback_reason": got.fallback_reason})
        log.info("%s: position posted on %s, round %s", self.role.name, wf.id, wf.round,
                 extra=fields(role=self.role.name, workflow=wf.id, step="discuss", round=wf.round,
                              source=got.source))

    async def vote(self, wf: Workflow, key: uuid.UUID) -> None:
        thread = await self.store.thread(wf.id)
        prompt = answers.render("vote", **self.values(wf, thread=render_thread(thread)))
        got = await deciders.answer(
            self.decider, prompt, wf.decider_timeout, answers.check_vote,
            lambda: answers.template_vote(self.role, wf.subject, wf.body),
            workflow=wf.id, step="vote")
        await self.post(wf.id, key, Kind.VOTE, f"{self.role.title} votes {got.data['vote']}",
                        {**got.data, "source": got.source, "fallback_reason": got.fallback_reason})
        log.info("%s: votes %s on %s", self.role.name, got.data["vote"], wf.id,
                 extra=fields(role=self.role.name, workflow=wf.id, step="vote", outcome=got.data["vote"],
                              source=got.source))

    async def report_tasks(self, wf: Workflow) -> None:
        """Post the outcome of each of this role's tasks once it is final."""
        decision = await self.store.decision_of(wf.id)
        ids = [t["task_id"] for t in (decision.tasks if decision else [])
               if t.get("role") == self.role.name and t.get("task_id")]
        for task in await self.store.tasks(ids):
            if not task.final:
                continue
            key = post_uuid(wf.id, "task", task.task_id)
            if not await self.store.posted(key):
                await self.post(wf.id, key, Kind.STATUS, f"task {task.task_id} {task.status}",
                                {"task": task.report()})
                log.info("%s: task %s %s, reported on %s", self.role.name, task.task_id, task.status,
                         wf.id, extra=fields(role=self.role.name, workflow=wf.id, step="report",
                                             task=task.task_id, outcome=task.status))
