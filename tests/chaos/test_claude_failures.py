"""A `claude` that crashes or answers 529: the right outcome and no process left.

tests/e2e/test_claude_executor.py covers an API that never answers (timeout, the
group killed) and a 429 retried to success. Here: the real CLI against a fake API
that answers 529 (overloaded), retried by the queue to success; and a `claude`
that dies by a signal after spawning a child of its own (ECHO_CLAUDE_BIN pointed
at a fake binary), retried to success with the orphan killed with its group.
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import psutil
import pytest

from echo.config import Settings
from echo.db import Database
from echo.work import ClaudeExecutor, TaskQueue
from tests.e2e.test_claude_executor import (  # noqa: F401 (fixtures)
    _processes_with_marker,
    api,
    claude_bin,
    make_executor,
    run_one,
)
from tests.fakes.anthropic import FakeAnthropic, error, text

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]


async def test_a_529_is_retried_by_the_queue_then_succeeds(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic,  # noqa: F811
    tmp_path: Path,
) -> None:
    api.script(error(529, "Overloaded"), text("after the overload"))
    marker = uuid.uuid4().hex
    executor = make_executor(settings, claude_bin, api, tmp_path, cli_max_retries=0, marker=marker)
    row = await run_one(settings, db, executor, max_retries=2)
    assert row["status"] == "completed" and row["retry_count"] == 1, row["error"]
    assert isinstance(row["result"], dict) and row["result"]["result"] == "after the overload"
    history = await TaskQueue(db).history(int(str(row["task_id"])))
    assert [h["action"] for h in history] == [
        "task.enqueued", "task.claimed", "task.retry_scheduled", "task.claimed", "task.completed"]
    assert "529" in history[2]["details"]["error"]
    assert _processes_with_marker(marker) == []


CRASHING_CLAUDE = textwrap.dedent("""\
    #!{python}
    # A `claude` that, on its first run, starts a child of its own and then dies by
    # SIGKILL without printing a result; on its second run it answers like the CLI.
    import json, os, signal, subprocess, sys
    sys.stdin.read()
    state = os.environ["FAKE_CLAUDE_STATE"]
    first = not os.path.exists(state)
    open(state, "a").close()
    if first:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        with open(state + ".orphan", "w") as fh:
            fh.write(str(child.pid))
        sys.stderr.write("TypeError: cannot read properties of undefined\\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    print(json.dumps({{"type": "result", "subtype": "success", "is_error": False,
                      "result": "recovered", "session_id": "s-1", "total_cost_usd": 0.001}}))
""")


async def test_a_crashing_claude_is_retried_and_leaves_no_process(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    fake = tmp_path / "claude"
    fake.write_text(CRASHING_CLAUDE.format(python=sys.executable))
    fake.chmod(0o755)
    marker = uuid.uuid4().hex
    executor = ClaudeExecutor(
        settings.claude.model_copy(update={"claude_bin": str(fake)}), settings.database,
        env={"FAKE_CLAUDE_STATE": str(tmp_path / "ran-once"), "ECHO_TEST_MARKER": marker},
        cwd=tmp_path, kill_grace=1.0,
    )
    row = await run_one(settings, db, executor, max_retries=2)
    assert row["status"] == "completed" and row["retry_count"] == 1, row["error"]
    assert isinstance(row["result"], dict) and row["result"]["result"] == "recovered"
    history = await TaskQueue(db).history(int(str(row["task_id"])))
    assert [h["action"] for h in history] == [
        "task.enqueued", "task.claimed", "task.retry_scheduled", "task.claimed", "task.completed"]
    failure = history[2]["details"]["error"]
    assert "signal 9" in failure and "without a JSON result" in failure, failure
    orphan = int((tmp_path / "ran-once.orphan").read_text())
    assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE
    assert _processes_with_marker(marker) == []  # the orphan died with its group
