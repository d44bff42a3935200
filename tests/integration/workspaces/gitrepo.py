"""A user's git repository in a temporary directory, and what tests ask of it."""

from __future__ import annotations

import subprocess
from pathlib import Path


def run_git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd),
                               "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
                               "GIT_AUTHOR_NAME": "user", "GIT_AUTHOR_EMAIL": "user@example.com",
                               "GIT_COMMITTER_NAME": "user",
                               "GIT_COMMITTER_EMAIL": "user@example.com"}).stdout.strip()


def user_repo(path: Path, files: dict[str, str] | None = None, branch: str = "main") -> Path:
    """A repository with one commit on `branch`, as a user's checkout would be."""
    path.mkdir(parents=True)
    run_git(path, "init", "--quiet", "-b", branch)
    for name, text in (files or {"README.md": "hello\n"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    run_git(path, "add", "--all")
    run_git(path, "commit", "--quiet", "-m", "initial")
    return path


def snapshot(path: Path) -> dict[str, str]:
    """Everything a user would notice changing in their checkout."""
    return {"head": run_git(path, "rev-parse", "HEAD"),
            "branches": run_git(path, "for-each-ref", "--format=%(refname) %(objectname)"),
            "status": run_git(path, "status", "--porcelain", "--untracked-files=all"),
            "worktrees": run_git(path, "worktree", "list", "--porcelain")}
