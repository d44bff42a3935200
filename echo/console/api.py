"""The JSON API, `/api/v1`: what a person can do at `echoctl`, over HTTP.

Every route calls the console's data seam (`echo.console.data`) and renders JSON;
input is checked by pydantic models before anything is written. Errors are
`{"error": "<one line>"}` with the status that says what went wrong: 400 bad input,
401 no or wrong token, 404 unknown id, 409 a state that forbids the change (retrying
a completed task), 503 the database (or the organisation's control socket) does not
answer.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from echo.console.data import ConsoleData
from echo.errors import UsageError
from echo.org.charts import MAX_MINUTES
from echo.work import NewTask

router = APIRouter(prefix="/api/v1")


class Conflict(UsageError):
    """The change is not allowed in the object's present state (HTTP 409)."""


def _data(request: Request) -> ConsoleData:
    data: ConsoleData = request.app.state.data
    return data


class NewMessage(BaseModel):
    subject: str = Field(..., description="One line")
    body: str | None = None
    from_: str = Field("operator", alias="from", description="A role, or operator")
    to: str = Field("all", description="all (a broadcast) or a role (a direct message)")


class NewWorkflow(BaseModel):
    subject: str
    body: str = ""
    from_: str = Field("operator", alias="from")
    rounds: int = Field(2, ge=1, le=10)
    quorum: Literal["majority", "unanimous"] = "majority"
    decider_timeout: float = Field(30.0, ge=1)
    phase_timeout: float = Field(120.0, ge=1)
    repo: str | None = Field(None, description="A repository (`repo add`) its decision's tasks work in")


class TaskIn(BaseModel):
    description: str
    role: str | None = None
    priority: int = 0
    timeout: int = 300
    type: str = "claude"
    payload: dict[str, Any] = Field(default_factory=dict)
    max_retries: int = 3
    dedupe_key: str | None = None


# ---------------------------------------------------------------------- agents
@router.get("/agents", summary="Every agent: state, pid, node, restarts, heartbeat, inbox lag, work")
async def agents(request: Request) -> dict[str, Any]:
    hub = request.app.state.hub
    status = await hub.current_status()  # polled once a second for every client together
    return {"organisation": status["organisation"], "agents": status["agents"]}


@router.post("/agents/{role}/restart", summary="Restart one agent (not counted as a crash)")
async def restart_agent(role: str, request: Request) -> dict[str, Any]:
    return await _data(request).restart(role)


# ---------------------------------------------------------------------- messages
@router.get("/messages", summary="Messages after an id (oldest first), else the latest")
async def messages(
    request: Request,
    after: int | None = Query(None, ge=0),
    limit: int = Query(50, ge=1, le=1000),
    role: str | None = None,
) -> list[dict[str, Any]]:
    return await _data(request).list_messages(after=after, limit=limit, role=role)


@router.post("/messages", status_code=201, summary="Broadcast (to=all) or send a direct message")
async def post_message(message: NewMessage, request: Request) -> dict[str, Any]:
    return await _data(request).publish(
        subject=message.subject, body=message.body, sender=message.from_, to=message.to
    )


# ---------------------------------------------------------------------- workflows
@router.post("/workflows", status_code=201, summary="Start a workflow: self-selection, discussion, vote")
async def start_workflow(body: NewWorkflow, request: Request) -> dict[str, Any]:
    return await _data(request).start_workflow(
        subject=body.subject, body=body.body, sender=body.from_, rounds=body.rounds, quorum=body.quorum,
        decider_timeout=body.decider_timeout, phase_timeout=body.phase_timeout, repo=body.repo,
    )


@router.get("/workflows", summary="Workflows, newest first")
async def workflows(request: Request, limit: int = Query(20, ge=1, le=1000)) -> list[dict[str, Any]]:
    return await _data(request).list_workflows(limit)


@router.get("/workflows/{workflow_id}",
            summary="One workflow: participants and why, positions, votes, decision, tasks, timeline")
async def workflow(workflow_id: str, request: Request) -> dict[str, Any]:
    return await _data(request).show_workflow(workflow_id)


@router.post("/workflows/{workflow_id}/cancel", summary="Cancel an unfinished workflow")
async def cancel_workflow(workflow_id: str, request: Request) -> dict[str, Any]:
    data = _data(request)
    await data.show_workflow(workflow_id)  # 404 before 409
    try:
        before = await data.cancel_workflow(workflow_id)
    except UsageError as exc:
        raise Conflict(str(exc)) from None
    return {"workflow_id": workflow_id, "phase": "cancelled", "was": before}


@router.get("/decisions", summary="The CEO's decisions, newest first")
async def decisions(request: Request, limit: int = Query(20, ge=1, le=1000)) -> list[dict[str, Any]]:
    return await _data(request).decisions(limit)


# ---------------------------------------------------------------------- tasks
@router.post("/tasks", status_code=201, summary="Submit a task to the work queue")
async def submit_task(body: TaskIn, request: Request) -> dict[str, Any]:
    task = NewTask(body.description, task_type=body.type, priority=body.priority, role=body.role,
                   timeout_seconds=body.timeout, max_retries=body.max_retries,
                   dedupe_key=body.dedupe_key, payload=body.payload)
    return await _data(request).submit(task)


@router.get("/tasks", summary="Tasks, newest first, by status and role")
async def tasks(
    request: Request,
    status: str | None = None,
    role: str | None = None,
    limit: int = Query(50, ge=1, le=1000),
) -> list[dict[str, Any]]:
    return await _data(request).list_tasks(status=status, role=role, limit=limit)


@router.get("/tasks/{task_id}", summary="One task with its history")
async def task(task_id: int, request: Request) -> dict[str, Any]:
    return await _data(request).show_task(task_id)


@router.post("/tasks/{task_id}/cancel", summary="Cancel a pending or running task")
async def cancel_task(task_id: int, request: Request) -> dict[str, Any]:
    data = _data(request)
    await data.show_task(task_id)  # 404 before 409
    try:
        previous = await data.cancel(task_id)
    except UsageError as exc:
        raise Conflict(str(exc)) from None
    return {"task_id": task_id, "status": "cancelled", "was": previous}


@router.post("/tasks/{task_id}/retry", summary="Queue a failed, dead or cancelled task again")
async def retry_task(task_id: int, request: Request, anywhere: bool = Query(
        False, description="Any worker may take it, not only the one with its worktree "
                           "(it starts over from the base); a pending task too")) -> dict[str, Any]:
    data = _data(request)
    await data.show_task(task_id)
    try:
        await data.retry(task_id, anywhere=anywhere)
    except UsageError as exc:
        raise Conflict(str(exc)) from None
    return {"task_id": task_id, "status": "pending"}


# ------------------------------------------------------------------- approvals
class Denial(BaseModel):
    reason: str = Field(..., description="Why; the resumed run is told")


@router.get("/approvals", summary="Approval requests, newest first, by state")
async def approvals(request: Request, state: str | None = None,
                    limit: int = Query(100, ge=1, le=10_000)) -> list[dict[str, Any]]:
    return await _data(request).list_approvals(state=state, limit=limit)


@router.get("/approvals/{approval_id}", summary="One approval request with its history")
async def approval(approval_id: int, request: Request) -> dict[str, Any]:
    return await _data(request).show_approval(approval_id)


@router.post("/approvals/{approval_id}/approve",
             summary="Approve a pending request: its task runs again and makes the call once")
async def approve(approval_id: int, request: Request) -> dict[str, Any]:
    return await _data(request).approve(approval_id)


@router.post("/approvals/{approval_id}/deny",
             summary="Deny a pending request; the resumed run is told the reason")
async def deny(approval_id: int, body: Denial, request: Request) -> dict[str, Any]:
    return await _data(request).deny(approval_id, body.reason)


@router.get("/runs/now", summary="What each running Claude task is doing now (its latest event)")
async def runs_now(request: Request) -> list[dict[str, Any]]:
    return await _data(request).doing_now()


# ---------------------------------------------------------------------- charts
@router.get("/charts/spend",
            summary="Each role's cumulative spend per hour of today (database clock) and its budget")
async def spend_chart(request: Request, role: str | None = None) -> dict[str, Any]:
    return await _data(request).spend_chart(role)


@router.get("/charts/finished", summary="Tasks finished per minute by outcome, over the last minutes")
async def finished_chart(request: Request, minutes: int = Query(60, ge=1, le=MAX_MINUTES)) -> dict[str, Any]:
    return await _data(request).finished_chart(minutes)


@router.get("/spend", summary="Recorded cost of Claude runs, per role")
async def spend(request: Request) -> dict[str, Any]:
    rows = await _data(request).spend()
    return {"total_usd": sum(r["cost_usd"] for r in rows), "roles": rows}


@router.get("/summary", summary="Tasks by status, spend, and the latest message id")
async def summary(request: Request) -> dict[str, Any]:
    data = _data(request)
    return {"tasks": await data.task_counts(), "spend": await spend(request),
            "messages": await data.message_count()}


# ---------------------------------------------------------------------- events
@router.get("/events", summary="Live events (SSE); Last-Event-ID resumes without a loss",
            response_class=StreamingResponse)
async def events(request: Request) -> StreamingResponse:
    hub = request.app.state.hub
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    try:
        last = int(raw) if raw else None
    except ValueError:
        raise UsageError(f"Last-Event-ID {raw!r} is not an event id (a number)") from None
    return StreamingResponse(
        hub.stream(last), media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
