"""What an approval gate costs a Claude run (issue 23 item 3).

- `hook_free_call`: the PreToolUse hook's process for a call no rule gates (it says
  nothing), against the baseline of starting the same Python interpreter to do
  nothing (`python -c pass`), interleaved; medians. Only gated tools call the hook at
  all (its matcher names them), so this is what a gated *tool* costs its other calls.
- `hook_gated_call`: the hook for a gated call, looked up in Postgres (a pending
  request found: `defer`), against the same baseline.

    python -m bench.approvals     (ECHO_TEST_DATABASE_URL or an embedded Postgres)
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import bench_settings, emit  # noqa: E402
from echo.db import Database  # noqa: E402
from echo.work.approvals import ApprovalStore, parse_rules  # noqa: E402
from echo.work.approvals.install import hook_settings  # noqa: E402

ROUNDS = 15


def timed(argv: list[str], stdin: str = "") -> float:
    started = time.perf_counter()
    subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True, timeout=60)
    return (time.perf_counter() - started) * 1000


async def main() -> None:
    async with bench_settings("approvals") as s:
        folder = s.state_dir.parent / "approval"  # inside the run's directory, removed with it
        folder.mkdir(mode=0o700)
        hook_settings(s.database, folder, task_id=1, role="cto", rules=parse_rules(["Bash(git push:*)"]),
                      timeout=s.approval_timeout)
        hook = [sys.executable, "-m", "echo.approval_hook", str(folder / "hook.json")]
        database = await Database.open(s.database, max_size=1)
        try:
            await ApprovalStore(database).check_call(
                task_id=1, role="cto", tool="Bash", tool_input={"command": "git push"},
                session_id="s", tool_use_id="toolu_1", expires_in=3600)
        finally:
            await database.close()
        free = json.dumps({"tool_name": "Bash", "tool_input": {"command": "ls"}})
        gated = json.dumps({"tool_name": "Bash", "tool_input": {"command": "git push"},
                            "tool_use_id": "toolu_1", "session_id": "s"})
        base, silent, looked_up = [], [], []
        for _ in range(ROUNDS):
            base.append(timed([sys.executable, "-c", "pass"]))
            silent.append(timed(hook, free))
            looked_up.append(timed(hook, gated))
        baseline = statistics.median(base)
        emit("approvals", "hook_free_call_ms", statistics.median(silent),
             baseline="python -c pass (ms)", baseline_value=baseline, rounds=ROUNDS)
        emit("approvals", "hook_gated_call_ms", statistics.median(looked_up),
             baseline="python -c pass (ms)", baseline_value=baseline, rounds=ROUNDS)


if __name__ == "__main__":
    anyio.run(main)
