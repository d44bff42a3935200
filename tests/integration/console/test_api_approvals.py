"""The approvals API (`/api/v1/approvals`) on a real console (`echoctl serve`) and real
Postgres: a pending request listed with its input, approved once by "console" (in the
audit trail, its task queued again), a second decision 409, an unknown id 404, a denial
without a reason 400, and a bad state filter 400."""

from __future__ import annotations

import httpx
import pytest

from echo import db as dbmod
from echo.work import TaskQueue
from echo.work.approvals import ApprovalStore
from tests.integration.console.test_api_input import api, console_settings, db

pytestmark = pytest.mark.anyio

__all__ = ["api", "console_settings", "db"]  # the fixtures, shared with test_api_input


async def request_for_a_new_task(db: dbmod.Database, command: str) -> tuple[int, int]:
    """A task (not due for an hour, so nothing claims it) and a pending request of it, as
    the hook records one."""
    task = await TaskQueue(db).enqueue("push it", task_type="noop", delay=3600)
    made = await ApprovalStore(db).check_call(
        task_id=task.task_id, role="cto", tool="Bash", tool_input={"command": command},
        session_id="s-1", tool_use_id=f"toolu_{task.task_id}", expires_in=600)
    assert made.decision == "defer"
    return task.task_id, made.approval.id


async def test_a_pending_request_is_listed_and_approved_once(
        api: httpx.AsyncClient, db: dbmod.Database) -> None:
    task_id, approval_id = await request_for_a_new_task(db, "git push origin main")
    listed = await api.get("/api/v1/approvals", params={"state": "pending"})
    assert listed.status_code == 200
    [row] = [a for a in listed.json() if a["id"] == approval_id]
    assert row["input"] == {"command": "git push origin main"}
    assert row["summary"] == "Bash: git push origin main" and row["task_id"] == task_id
    done = await api.post(f"/api/v1/approvals/{approval_id}/approve")
    assert done.status_code == 200
    assert (done.json()["state"], done.json()["decided_by"]) == ("approved", "console")
    again = await api.post(f"/api/v1/approvals/{approval_id}/deny", json={"reason": "no"})
    assert again.status_code == 409
    assert again.json() == {"error": f"approval request {approval_id} is already approved by "
                                     "console; only a pending request can be decided"}
    shown = await api.get(f"/api/v1/approvals/{approval_id}")
    assert [(h["actor"], h["action"]) for h in shown.json()["history"]] == [
        ("system", "approval.requested"), ("console", "approval.approved")]


async def test_unknown_ids_and_bad_input_are_one_line(api: httpx.AsyncClient, db: dbmod.Database) -> None:
    missing = await api.post("/api/v1/approvals/999999/approve")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no approval request 999999; `echoctl approvals list` "
                                       "shows them"}
    assert (await api.get("/api/v1/approvals/999999")).status_code == 404
    _, approval_id = await request_for_a_new_task(db, "git push --force")
    blank = await api.post(f"/api/v1/approvals/{approval_id}/deny", json={"reason": "  "})
    assert blank.status_code == 400 and "a denial needs a reason" in blank.json()["error"]
    none = await api.post(f"/api/v1/approvals/{approval_id}/deny", json={})
    assert none.status_code == 400
    assert (await ApprovalStore(db).get(approval_id)).state == "pending"  # nothing written
    state = await api.get("/api/v1/approvals", params={"state": "maybe"})
    assert state.status_code == 400 and "unknown approval state 'maybe'" in state.json()["error"]
    huge = await api.post(f"/api/v1/approvals/{2**63}/approve")
    assert huge.status_code == 400 and "approval id" in huge.json()["error"]
