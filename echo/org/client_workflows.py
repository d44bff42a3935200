"""The client's workflows: start one, follow it, list, show, cancel; the decisions.

A workflow is broadcast to the agents that are up, who self-select; with none up
it is refused (`NoAgentsUp`), since nobody would ever move it on.
"""

from __future__ import annotations

import anyio

from echo.bus import Kind, Message
from echo.errors import EchoError, NotFound, UsageError
from echo.org.client_base import ClientBase, NoAgentsUp
from echo.org.governance import annotate_waiting
from echo.org.inputs import check_seconds, normalise_workflow_id
from echo.org.roles import NON_AGENT_SENDERS, check_role, role_names
from echo.org.workflow import (
    QUORUMS,
    Decision,
    Delivery,
    Phase,
    Workflow,
    WorkflowDetail,
    post_uuid,
)


class WorkflowOps(ClientBase):
    """Workflows: the organisation deciding together."""

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
