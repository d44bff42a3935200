"""Approvals that wait with no process held (issue 23 item 3), with the REAL `claude` CLI
against the fake API: a gated Bash call (`echo hi >> marker.txt`) does not run until an
operator approves it, then runs exactly once and the task completes; a denial never
runs it and the resumed run is told the reason; an expired request is a denial; the
worker is stopped and another started while a request waits; the CLI's bad input."""

from __future__ import annotations

import getpass
import json
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from echo.config import Settings
from echo.db import Database
from echo.org.client import Client
from echo.runtime import Backoff
from echo.work import ClaudeRunOptions, ExecutorPool, NoopExecutor, TaskQueue
from echo.work.approvals import ApprovalStore
from echo.work.governor import Governor
from tests import helpers as org_tests
from tests.e2e import test_claude_executor as executor_tests
from tests.fakes.anthropic import FakeAnthropic, text, tool_use
from tests.helpers import run_cli, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

claude_bin = executor_tests.claude_bin
api = executor_tests.api
FAST = Backoff(initial=0.05, max=0.1)
CALL = "echo hi >> marker.txt"
GATED = ClaudeRunOptions(model="sonnet", allowed_tools=("Bash",),
                         approval_tools=("Bash(echo hi:*)",))


def executor(settings: Settings, claude_bin: str, api: FakeAnthropic, tmp_path: Path,
             config: str = "claude-config") -> object:
    made = executor_tests.make_executor(settings, claude_bin, api, tmp_path, options=GATED)
    made.config_dir = tmp_path / config
    made.cwd = workdir(tmp_path)
    return made


def workdir(tmp_path: Path) -> Path:
    where = tmp_path / "work"
    where.mkdir(exist_ok=True)
    return where


def marker_lines(tmp_path: Path) -> list[str]:
    marker = workdir(tmp_path) / "marker.txt"
    return marker.read_text().splitlines() if marker.exists() else []


async def status(db: Database, task_id: int) -> str:
    return str((await TaskQueue(db).get(task_id))["status"])


async def run_pool(settings: Settings, db: Database, claude: object, task_ids: Sequence[int],
                   wanted: Sequence[str]) -> None:
    """Run a one-slot pool until every task in `task_ids` has one of the `wanted` statuses."""
    pool = ExecutorPool(settings.work, db, {"claude": claude, "noop": NoopExecutor()},  # type: ignore[dict-item]
                        concurrency=1, backoff=FAST)

    async def reached() -> bool:
        return all([await status(db, t) in wanted for t in task_ids])

    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        await wait_until(reached, timeout=180, interval=0.05)
        pool.stop()


async def gated_task(settings: Settings, db: Database, claude: object,
                     api: FakeAnthropic) -> int:
    """A task whose run calls the gated Bash, run until it awaits approval."""
    api.conversation(tool_use("Bash", {"command": CALL, "description": "mark"}),
                     text("Marked it."))
    made = await TaskQueue(db).enqueue("mark the file", task_type="claude")
    await run_pool(settings, db, claude, [made.task_id], ["awaiting_approval", "failed", "dead"])
    return made.task_id


async def test_a_gated_call_waits_for_approval_then_runs_exactly_once(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    claude = executor(settings, claude_bin, api, tmp_path)
    task_id = await gated_task(settings, db, claude, api)
    assert await status(db, task_id) == "awaiting_approval"
    assert marker_lines(tmp_path) == []  # the call was not made
    listed = await run_cli(settings, "approvals", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [request] = json.loads(listed.stdout)
    assert request["state"] == "pending" and request["task_id"] == task_id
    assert request["tool_name"] == "Bash" and request["input"]["command"] == CALL
    shown = await run_cli(settings, "tasks", "list")
    assert "awaiting_approval" in shown.stdout
    one = await run_cli(settings, "tasks", "show", str(task_id))
    assert f"approval request {request['id']} pending: Bash: {CALL}" in one.stdout
    followed = await run_cli(settings, "tasks", "show", str(task_id), "--follow")
    assert followed.returncode == 0
    assert followed.stdout.strip().splitlines()[-1] == (
        f"task {task_id} awaiting_approval: `echoctl approvals list --task {task_id}`")
    # The slot is free: another task runs while this one waits.
    other = await TaskQueue(db).enqueue("something else", task_type="noop")
    await run_pool(settings, db, claude, [other.task_id], ["completed"])
    assert await status(db, task_id) == "awaiting_approval" and marker_lines(tmp_path) == []

    approved = await run_cli(settings, "approvals", "approve", str(request["id"]))
    assert approved.returncode == 0, approved.stderr
    assert f"approval request {request['id']} approved by cli:{getpass.getuser()}" in approved.stdout
    assert await status(db, task_id) == "pending"
    await run_pool(settings, db, claude, [task_id], ["completed", "failed", "dead"])
    row = await TaskQueue(db).get(task_id)
    assert row["status"] == "completed", row["error"]
    assert marker_lines(tmp_path) == ["hi"]  # exactly once
    assert (await ApprovalStore(db).get(request["id"])).state == "used"
    runs = await Governor(settings.governor, db).runs_of_task(task_id)
    assert [(r["outcome"], r["resumed_attempt"]) for r in runs] == [("deferred", None), ("ok", 1)]
    assert runs[0]["session_id"] == runs[1]["session_id"]
    detail = await run_cli(settings, "approvals", "show", str(request["id"]), "--json")
    assert detail.returncode == 0, detail.stderr
    actions = [(h["actor"], h["action"]) for h in json.loads(detail.stdout)["history"]]
    assert ("system", "approval.requested") in actions
    assert (f"cli:{getpass.getuser()}", "approval.approved") in actions
    # Deciding it again is one line, exit 1.
    again = await run_cli(settings, "approvals", "deny", str(request["id"]), "--reason", "no")
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [
        f"error: approval request {request['id']} is already used by cli:{getpass.getuser()}; "
        "only a pending request can be decided"]


async def test_a_denied_call_never_runs_and_the_run_goes_on_with_the_reason(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    claude = executor(settings, claude_bin, api, tmp_path)
    task_id = await gated_task(settings, db, claude, api)
    [request] = await ApprovalStore(db).requests(task_id=task_id)
    async with Client(settings, database=db) as client:
        denied = await client.deny(request.id, "the marker file is frozen", by="ops-test")
    assert denied.state == "denied" and denied.decided_by == "ops-test"
    await run_pool(settings, db, claude, [task_id], ["completed", "failed", "dead"])
    row = await TaskQueue(db).get(task_id)
    assert row["status"] == "completed", row["error"]
    assert marker_lines(tmp_path) == []
    carried = json.dumps(api.session_requests()[-1].body["messages"])
    assert "the marker file is frozen" in carried  # the refused call's result, and the prompt
    assert "refused by ops-test" in carried


async def test_an_expired_request_is_a_denial_with_reason_expired(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    claude = executor(settings, claude_bin, api, tmp_path)
    task_id = await gated_task(settings, db, claude, api)
    store = ApprovalStore(db)
    [request] = await store.requests(task_id=task_id)
    assert await store.sweep(clock=request.expires_at - timedelta(seconds=1)) == []
    assert (await store.get(request.id)).state == "pending"
    assert await store.sweep(clock=request.expires_at + timedelta(seconds=1)) == [task_id]
    expired = await store.get(request.id)
    assert (expired.state, expired.reason, expired.decided_by) == ("expired", "expired", "system")
    async with Client(settings, database=db) as client:
        with pytest.raises(Exception, match="already expired"):
            await client.approve(request.id, by="late")
    await run_pool(settings, db, claude, [task_id], ["completed", "failed", "dead"])
    assert await status(db, task_id) == "completed"
    assert marker_lines(tmp_path) == []
    assert "expired" in json.dumps(api.session_requests()[-1].body["messages"])


async def test_a_request_survives_its_worker_and_another_worker_resumes_it(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    """The first worker (and its CLI config dir, so its local transcript) is gone when the
    decision comes; a second worker restores the session from Postgres and makes the call."""
    task_id = await gated_task(settings, db, executor(settings, claude_bin, api, tmp_path), api)
    [request] = await ApprovalStore(db).requests(task_id=task_id)
    async with Client(settings, database=db) as client:
        await client.approve(request.id, by="ops-test")
    second = executor(settings, claude_bin, api, tmp_path, config="another-config")
    await run_pool(settings, db, second, [task_id], ["completed", "failed", "dead"])
    assert await status(db, task_id) == "completed"
    assert marker_lines(tmp_path) == ["hi"]


async def test_approvals_cli_bad_input_is_one_line(settings: Settings) -> None:
    missing = await run_cli(settings, "approvals", "approve", "999999")
    assert missing.returncode == 1
    assert missing.stderr.strip() == ("error: no approval request 999999; `echoctl approvals list` "
                                      "shows them")
    bad_state = await run_cli(settings, "approvals", "list", "--state", "maybe")
    assert bad_state.returncode == 2 and "unknown approval state 'maybe'" in bad_state.stderr
    no_reason = await run_cli(settings, "approvals", "deny", "1")
    assert no_reason.returncode == 2
    empty = await run_cli(settings, "approvals", "deny", "1", "--reason", " ")
    assert empty.returncode == 2 and "a denial needs a reason" in empty.stderr


async def test_the_organisation_restarted_while_a_request_waits_then_approved(
    org_settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    """A real organisation (`echoctl up`): the CTO's pool runs the task through the real CLI,
    whose run stops at the gated call; the organisation goes down and comes back; the
    request is still there, and once approved the CTO's next attempt makes the call once."""
    s = org_settings
    role = s.agents_dir / "cto" / "role.toml"
    role.write_text(role.read_text().replace(
        'allowed_tools = ["Read", "Grep", "Glob", "Bash(git log:*)"]',
        'allowed_tools = ["Read", "Bash"]') + '\n[approval]\ntools = ["Bash(echo hi:*)"]\n')
    api.conversation(tool_use("Bash", {"command": CALL, "description": "mark"}),
                     text("Marked it."))
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {**api.env("sk-ant-test-0123456789"), "HOME": str(home), "ECHO_CLAUDE_BIN": claude_bin}

    async def up() -> None:
        started = await run_cli(s, "up", "--roles", "cto", "--detach", timeout=120, **env)
        assert started.returncode == 0, started.stderr
        await wait_until(org_tests.all_in(s, "healthy", ["cto"]), timeout=60, interval=0.1)

    await up()
    async with Client(s, database=db) as client:
        task_id = (await client.submit_task(
            "mark the file", role="cto", payload={"cwd": str(workdir(tmp_path))})).task_id
        await wait_until(lambda: status_is(db, task_id, "awaiting_approval"), timeout=120,
                         interval=0.1)
        assert marker_lines(tmp_path) == []
        down = await run_cli(s, "down", "--timeout", "30")
        assert down.returncode == 0, down.stderr
        assert org_tests.org_processes(s) == []
        [request] = await client.approvals(task_id=task_id)
        assert request.state == "pending"
        await up()
        assert await status(db, task_id) == "awaiting_approval"  # nothing ran it meanwhile
        assert marker_lines(tmp_path) == []
        await client.approve(request.id, by="ops-test")
        await wait_until(lambda: status_is(db, task_id, "completed", "failed", "dead"),
                         timeout=120, interval=0.1)
    row = await TaskQueue(db).get(task_id)
    assert row["status"] == "completed", row["error"]
    assert marker_lines(tmp_path) == ["hi"]


async def status_is(db: Database, task_id: int, *wanted: str) -> bool:
    return await status(db, task_id) in wanted
