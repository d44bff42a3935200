"""Workspace benchmarks (issue 22), on a generated repository of 10k files. One JSON
line per figure, its baseline measured in the same run:

- `setup_ms`: a task's workspace made (`open_workspace`: lock, fetch from the user's
  repository, `git worktree add -b`, its record), median of ECHO_BENCH_ROUNDS (5),
  beside a bare `git worktree add -b` on the same mirror;
- `teardown_ms`: `remove_workspace` beside a bare `git worktree remove --force`;
- `concurrent_setup_8`: 8 workspaces of one repository made at once from 8 threads
  (wall time, failures: must be 0; no lock timeouts) beside the same 8 made one after
  another; `unlocked_failures` counts how many of 8 bare concurrent `git worktree add`
  failed on the same mirror without the lock (the race the lock is for; 0 is luck).

    .venv/bin/python -m bench.workspaces
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench._common import emit
from echo.work.workspaces import Layout, Repository, open_workspace, remove_workspace
from echo.work.workspaces.git import git
from echo.work.workspaces.repository import ensure_mirror

BENCH = "workspaces"
FILES = int(os.environ.get("ECHO_BENCH_FILES", "10000"))
ROUNDS = int(os.environ.get("ECHO_BENCH_ROUNDS", "5"))


def make_repo(path: Path, files: int) -> None:
    path.mkdir(parents=True)
    git(["init", "--quiet", "-b", "main"], cwd=path)
    for i in range(files):
        folder = path / f"d{i // 100:03d}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{i % 100:03d}.txt").write_text(f"file {i}\n")
    git(["add", "--all"], cwd=path)
    git(["commit", "--quiet", "-m", "10k files"], cwd=path)


def timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return (time.perf_counter() - started) * 1000


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="echo-bench-workspaces-"))
    try:
        source = tmp / "user-repo"
        make_repo(source, FILES)
        state = tmp / "state"
        repo = Repository("bench", str(source), "main")
        layout = Layout.of(state, "bench")
        clone_ms = timed(lambda: ensure_mirror(layout, repo))
        mirror = layout.mirror
        bare = tmp / "bare"
        bare.mkdir()

        ours, base, ours_down, base_down = [], [], [], []
        for i in range(ROUNDS):
            ours.append(timed(lambda i=i: open_workspace(state, repo, 1000 + i, "cto")))
            path = bare / f"w{i}"
            base.append(timed(lambda p=path, i=i: git(
                ["worktree", "add", "--quiet", "-b", f"bare/{i}", str(p), "main"], cwd=mirror)))
        for i in range(ROUNDS):
            ours_down.append(timed(lambda i=i: remove_workspace(state, "bench", 1000 + i)))
            path = bare / f"w{i}"
            base_down.append(timed(lambda p=path: git(
                ["worktree", "remove", "--force", str(p)], cwd=mirror)))
        emit(BENCH, "setup_ms", statistics.median(ours), baseline="git worktree add",
             baseline_value=statistics.median(base), files=FILES, rounds=ROUNDS,
             mirror_clone_ms=round(clone_ms, 1))
        emit(BENCH, "teardown_ms", statistics.median(ours_down),
             baseline="git worktree remove --force", baseline_value=statistics.median(base_down),
             files=FILES, rounds=ROUNDS)

        def one(task_id: int) -> str | None:
            try:
                open_workspace(state, repo, task_id, "cto")
                return None
            except Exception as exc:  # counted: the figure is how many fail
                return str(exc)

        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            errors = [e for e in pool.map(one, range(2000, 2008)) if e]
        concurrent_ms = (time.perf_counter() - started) * 1000
        sequential_ms = sum(timed(lambda t=t: open_workspace(state, repo, t, "cto"))
                            for t in range(3000, 3008))

        def unlocked(i: int) -> int:
            done = subprocess.run(["git", "worktree", "add", "--quiet", "-b", f"race/{i}",
                                   str(bare / f"race{i}"), "main"], cwd=mirror,
                                  capture_output=True, check=False)
            return done.returncode

        with ThreadPoolExecutor(8) as pool:
            unlocked_failures = sum(1 for rc in pool.map(unlocked, range(8)) if rc != 0)
        emit(BENCH, "concurrent_setup_8", concurrent_ms, baseline="8 set-ups one after another",
             baseline_value=sequential_ms, failures=len(errors), errors=errors[:2],
             unlocked_failures=unlocked_failures, files=FILES)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
