"""What a person reads as a task's status: one word for the CLI and the dashboard."""

from __future__ import annotations

from datetime import UTC, datetime

from echo.org.views import TaskSummary
from echo.org.workflow import SKIPPED


def summary(status: str, error: str | None) -> TaskSummary:
    return TaskSummary(task_id=1, task_type="claude", task_description="d", task_priority=0,
                       status=status, retry_count=0, max_retries=3, error=error,
                       created_at=datetime.now(UTC))


def test_a_task_failed_because_claude_was_unavailable_reads_skipped() -> None:
    s = summary("failed", f"{SKIPPED} (not logged in)")
    assert s.outcome == "skipped"
    assert s.model_dump(mode="json")["outcome"] == "skipped"  # what the console's API serves


def test_other_statuses_read_as_they_are() -> None:
    assert summary("failed", "command exited 2").outcome == "failed"
    assert summary("completed", None).outcome == "completed"
    assert summary("pending", None).outcome == "pending"
