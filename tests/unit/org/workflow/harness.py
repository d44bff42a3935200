"""An organisation on the workflow's in-memory adapters (echo.org.workflow.memory): the
CEO's driver and the other roles' parts, one shared store, a task queue and a clock the
test moves. No LLM decider: the keyword and template fallbacks decide, so a run is
deterministic. Nothing sleeps and nothing reads the wall clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from echo.bus import Kind, Message, workflow_channel
from echo.config import Settings
from echo.org.roles import load_roles
from echo.org.workflow import (
    Driver,
    Phase,
    RolePart,
    Workflow,
    WorkflowAgent,
    post_uuid,
)
from echo.org.workflow.memory import MemoryTasks, MemoryWorkflowStore

ROLES = load_roles(Settings().agents_dir)
#: What the CEO's and the CTO's keywords select (budget, API) and the CHRO's do not.
SUBJECT, BODY = "Move the API to the new cluster", "budget approved"
PHASE_TIMEOUT = 60.0


class Clock:
    """Test time: what the adapters stamp, moved only by `advance` (across a year end)."""

    def __init__(self) -> None:
        self.at = datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@dataclass
class Org:
    store: MemoryWorkflowStore
    tasks: MemoryTasks
    clock: Clock
    driver: Driver
    parts: list[RolePart] = field(default_factory=list)

    async def start(self, roles: list[str], *, rounds: int = 1, quorum: str = "majority",
                    subject: str = SUBJECT, body: str = BODY,
                    repo: dict[str, Any] | None = None) -> str:
        return await self.store.create(
            subject=subject, body=body, started_by="operator", roles=roles, rounds=rounds,
            quorum=quorum, decider_timeout=1.0, phase_timeout=PHASE_TIMEOUT, repo=repo)

    async def workflow(self, wf_id: str) -> Workflow:
        wf = await self.store.get(wf_id)
        assert wf is not None
        return wf

    async def at(self, wf_id: str) -> tuple[Phase, int]:
        """Where the workflow is: its phase and round."""
        wf = await self.workflow(wf_id)
        return wf.phase, wf.round

    async def tick(self) -> None:
        """One wake-up of every agent that is up, the CEO last (it then sees every part)."""
        for wf in await self.store.open():
            for part in self.parts:
                await part.my_part(wf)
            await self.driver.my_part(wf)
        for wf in await self.store.open():
            await self.driver.drive(wf)

    async def run_until(self, wf_id: str, phase: Phase, ticks: int = 20) -> None:
        for _ in range(ticks):
            if (await self.workflow(wf_id)).phase == phase:
                return
            await self.tick()
        assert (await self.workflow(wf_id)).phase == phase

    def down(self, name: str) -> None:
        """`name`'s agent stops: it does its part no more and is not up."""
        self.parts = [p for p in self.parts if p.role.name != name]
        self.store.up.discard(name)

    async def vote(self, wf_id: str, name: str, vote: str) -> None:
        """`name` votes as its LLM would (the templates always approve)."""
        await self.store.publish(Message.build(
            uuid=post_uuid(wf_id, name, "vote"), channel=workflow_channel(wf_id), kind=Kind.VOTE,
            from_role=name, thread_id=wf_id, subject=f"[{wf_id}] {name} votes {vote}",
            body={"workflow": wf_id, "vote": vote, "reason": "a test's vote"}))


def organisation(names: list[str]) -> Org:
    """The agents of `names` up (the CEO's drives), on one in-memory store."""
    clock = Clock()
    store = MemoryWorkflowStore(now=clock)
    tasks = MemoryTasks(store)
    driver = Driver(ROLES["ceo"], store, store.publish, tasks, roles=ROLES)
    parts = [RolePart(ROLES[n], store, store.publish) for n in names if n != "ceo"]
    store.up = set(names)
    return Org(store, tasks, clock, driver, parts)


def agent_on(org: Org, role: str) -> WorkflowAgent:
    """`role`'s workflow agent (its loop's `step`) on the organisation's store."""
    agent = WorkflowAgent(Settings(), None, ROLES[role])  # type: ignore[arg-type]
    agent.store = org.store
    agent.part = org.driver if role == "ceo" else RolePart(ROLES[role], org.store, org.store.publish)
    return agent
