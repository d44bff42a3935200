"""The `echo` server's tools: each one small function, a thin call of the client.

A tool is an async function whose first parameter is the `Org` it acts on and whose
other parameters are the tool's arguments (their annotations make its input schema,
and its docstring is its description); `@tool` registers it:

    @tool(read_only=True)
    async def task(org: Org, id: int) -> Any:
        \"\"\"One task: every column, its audit trail and its Claude runs' events.\"\"\"
        return await org.client.task(id)

Whatever it returns is made JSON-able (pydantic models as `model_dump(mode="json")`).
It validates nothing itself: the client does, and raises a one-line `EchoError`,
which `echo.mcp.server` turns into one tool error result. `@tool(operator_only=True)`
keeps a tool out of a role's server: nothing a role's run may call approves a
request, raises a budget or acts as another role; `role_only=True` keeps one out of
the operator's (a request the role makes, such as a budget raise). `read_only=True` tells clients
(`readOnlyHint`) that it changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, overload

from pydantic import Field
from pydantic_core import to_jsonable_python

from echo.bus import ALL
from echo.config import Settings
from echo.errors import UsageError
from echo.mcp.scope import Scope
from echo.org.client import Client
from echo.org.inputs import decider_name
from echo.org.views import SendKind


@dataclass(frozen=True)
class Org:
    """What a tool acts on: the organisation's settings, the scope, and the client
    (`connect` returns the one whoever serves opened: the console opens it in its
    lifespan, after the server is built)."""

    settings: Settings
    scope: Scope
    connect: Callable[[], Client]

    @property
    def client(self) -> Client:
        return self.connect()


ToolFn = Callable[..., Awaitable[Any]]


def as_json(data: Any) -> str:
    """`data` (pydantic models too, as `model_dump(mode="json")`) as JSON text: what a
    tool result and a resource carry."""
    return json.dumps(to_jsonable_python(data), ensure_ascii=False)


@dataclass(frozen=True)
class ToolSpec:
    fn: ToolFn
    operator_only: bool = False
    role_only: bool = False  # only a role's server: a request the role makes of the operator
    read_only: bool = False  # told to clients (`readOnlyHint`): it changes nothing

    @property
    def name(self) -> str:
        return self.fn.__name__


#: Every tool, in the order `tools/list` shows them.
TOOLS: dict[str, ToolSpec] = {}


@overload
def tool(fn: ToolFn, /) -> ToolFn: ...
@overload
def tool(*, operator_only: bool = False, role_only: bool = False,
         read_only: bool = False) -> Callable[[ToolFn], ToolFn]: ...


def tool(fn: ToolFn | None = None, /, *, operator_only: bool = False, role_only: bool = False,
         read_only: bool = False) -> Any:
    """Register `fn` as a tool of the server (of the operator's only, with `operator_only`;
    `read_only` when it changes nothing)."""
    def register(f: ToolFn) -> ToolFn:
        TOOLS[f.__name__] = ToolSpec(f, operator_only=operator_only, role_only=role_only,
                                     read_only=read_only)
        return f

    return register(fn) if fn is not None else register


def tools_for(scope: Scope) -> list[ToolSpec]:
    """The tools a server of `scope` offers: a role's, only those its file allows."""
    if scope.is_operator:
        return [t for t in TOOLS.values() if not t.role_only]
    return [t for t in TOOLS.values()
            if not t.operator_only and (scope.tools is None or t.name in scope.tools)]


Limit = Annotated[int, Field(ge=1, le=10_000, description="at most this many")]
RoleName = Annotated[str, Field(description="a role of the organisation: ceo, cto, ... (echo://roles)")]
WorkflowId = Annotated[str, Field(description="a workflow id: wf-12, or 12")]


# ---------------------------------------------------------------- the bus


@tool
async def broadcast(org: Org, subject: str, body: str = "") -> Any:
    """Broadcast a message to every role of the organisation (stored, then announced).
    Returns the stored message's id (`db_id`) and how its announcement went."""
    return await org.client.broadcast(subject, body, sender=org.scope.sender)


@tool
async def send(org: Org, to: RoleName, subject: str, body: str = "") -> Any:
    """Send a direct message to one role (`to`: cto, cfo, ...). Returns the stored
    message's id (`db_id`)."""
    if to == ALL:
        raise UsageError("send goes to one role; use the broadcast tool to reach every role")
    return await org.client.broadcast(subject, body, sender=org.scope.sender, to=to,
                                      kind=SendKind.DIRECT)


@tool(read_only=True)
async def messages(org: Org, role: RoleName | None = None,
                   after: Annotated[int | None, Field(description="a message id")] = None,
                   limit: Limit = 20) -> Any:
    """Messages, oldest first: those after message id `after`, else the latest `limit`;
    with `role`, only what that role sent or received (direct or broadcast)."""
    return await org.client.messages(role=role, after=after, limit=limit)


@tool
async def ask(org: Org, role: RoleName, question: str,
              timeout: Annotated[float, Field(  # noqa: ASYNC109 (the tool's argument's name)
                  ge=1, le=600, description="seconds to wait for the answer")] = 60) -> Any:
    """Ask one role a question and wait for its agent's answer (its Claude's, or its
    fallback's, which says so: `source`). The question and the answer are messages on
    their own thread."""
    return await org.client.ask(role, question, within=timeout, sender=org.scope.sender)


@tool(read_only=True)
async def thread(org: Org, workflow_id: WorkflowId) -> Any:
    """The messages of one workflow's thread (wf-12, or 12), oldest first."""
    return (await org.client.workflow(workflow_id)).messages


# ---------------------------------------------------------------- tasks


@tool
async def submit_task(org: Org, description: str, role: RoleName | None = None,
                      repo: Annotated[str | None, Field(description="a repository `echoctl repo "
                                                        "add` registered")] = None) -> Any:
    """Queue a Claude task: for one role's workers when `role` is given, in its own
    worktree of registered repository `repo` when given. Returns its `task_id`."""
    return await org.client.submit_task(description, role=role, repo=repo)


@tool(read_only=True)
async def task(org: Org, id: int) -> Any:
    """One task: every column, its audit trail and its Claude runs' events."""
    return await org.client.task(id)


# ---------------------------------------------------------------- workflows


@tool
async def start_workflow(org: Org, subject: str, body: str = "") -> Any:
    """Start a workflow: the agents that are up discuss `subject`, vote, and the CEO
    decides. Returns the workflow (its `id`, e.g. wf-12, and phase)."""
    return await org.client.start_workflow(subject, body=body, sender=org.scope.sender)


@tool(read_only=True)
async def workflow(org: Org, id: WorkflowId) -> Any:
    """One workflow (wf-12, or 12): its participants, thread, decision, tasks and timeline."""
    return await org.client.workflow(id)


@tool(read_only=True)
async def decisions(org: Org) -> Any:
    """The decisions the CEO wrote, newest first."""
    return await org.client.decisions()


# ---------------------------------------------------------------- the organisation


@tool(read_only=True)
async def status(org: Org) -> Any:
    """Each agent: role, state, pid, uptime, restarts, heartbeat age, inbox lag, running
    tasks, and why it is degraded if it is."""
    return await org.client.status()


@tool(read_only=True)
async def spend(org: Org) -> Any:
    """What Claude cost today against the budgets, per role, and what waits and why."""
    return await org.client.spend_report()


# ---------------------------------------------------------------- approvals


@tool(operator_only=True, read_only=True)
async def approvals(org: Org, state: Annotated[str | None, Field(
        description="pending, approved, denied, expired or used")] = None) -> Any:
    """Approval requests, newest first: each gated tool call (role, task, tool, input),
    merge or budget request, and its state."""
    return await org.client.approvals(state=state)


@tool(operator_only=True)
async def approve(org: Org, id: int) -> Any:
    """Approve a pending request: its task resumes and the call is made once."""
    return await org.client.approve(id, by=decider_name("mcp"))


@tool(operator_only=True)
async def deny(org: Org, id: int, reason: str) -> Any:
    """Deny a pending request with a reason, which the resumed run is told."""
    return await org.client.deny(id, reason, by=decider_name("mcp"))


@tool(role_only=True)
async def request_budget(org: Org, daily_usd: Annotated[float, Field(gt=0)], reason: str) -> Any:
    """Ask the operator for a daily budget of `daily_usd` for this role (a request the
    operator approves or denies; a role never raises its own budget)."""
    assert org.scope.role is not None  # role_only
    return await org.client.request_budget(org.scope.role, daily_usd, reason)
