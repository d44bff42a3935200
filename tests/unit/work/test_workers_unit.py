"""Which live claimer takes a task, and the line a task nobody takes shows (pure)."""

from __future__ import annotations

from echo.work.workers import Serving, unserved


def row(role: str | None = None, task_type: str = "claude", status: str = "pending") -> dict[str, object]:
    return {"status": status, "task_type": task_type, "assigned_role": role}


def test_a_task_without_a_role_needs_a_worker_without_roles() -> None:
    assert unserved(row(), []) == "waiting: no worker for role-less tasks; run `echoctl worker`"
    cto_agent = Serving("h:1", ("cto",), ("claude", "command", "noop"))  # an agent's pool
    cto_worker = Serving("h:2", ("cto",), ("claude",))
    assert unserved(row(), [cto_agent, cto_worker]) == unserved(row(), [])
    assert unserved(row(), [Serving("h:2", None, ("claude", "noop"))]) is None
    assert unserved(row(task_type="noop"), [Serving("h:2", None, ("claude",))]) == (
        "waiting: no worker runs noop tasks; run `echoctl worker --executor noop`")


def test_a_roles_task_needs_its_agent_or_a_worker_for_it() -> None:
    down = "waiting: the cto agent is not running; run `echoctl up`"
    assert unserved(row("cto"), []) == down
    assert unserved(row("cto"), [Serving("h:1", ("ceo",), ("claude",))]) == down
    assert unserved(row("cto"), [Serving("h:1", ("cto",), ("claude",))]) is None
    assert unserved(row("cto", "noop"), [Serving("h:1", ("cto", "ceo"), ("noop",))]) is None
    assert unserved(row("cto"), [Serving("h:3", None, ("claude",))]) is None  # any role
    assert unserved(row("cto"), [Serving("h:1", ("cto",), ("noop",))]) == down


def test_only_pending_tasks_wait() -> None:
    for status in ("running", "completed", "failed", "cancelled", "dead"):
        assert unserved(row(status=status), []) is None


def test_a_task_pinned_to_its_worktree_waits_for_a_worker_of_that_place() -> None:
    pinned = {**row("cto"), "task_id": 12, "workspace_at": "vm:/home/me/.local/state/echo"}
    there = Serving("vm:1", ("cto",), ("claude",), "vm:/home/me/.local/state/echo")
    elsewhere = Serving("other:1", ("cto",), ("claude",), "other:/srv/echo")
    assert unserved(pinned, [there]) is None
    assert unserved(pinned, [elsewhere, there]) is None
    waiting = unserved(pinned, [elsewhere])
    assert waiting == ("waiting: its worktree is at vm:/home/me/.local/state/echo (the "
                       "repository is not pushed), where no worker runs; start one there, or "
                       "`echoctl tasks retry 12 --anywhere` to start it over from the base on "
                       "any machine")
    # with no worker for its role anywhere, that is the first thing to fix
    assert unserved(pinned, []) == "waiting: the cto agent is not running; run `echoctl up`"
    assert unserved({**pinned, "workspace_at": None}, [elsewhere]) is None  # not pinned
