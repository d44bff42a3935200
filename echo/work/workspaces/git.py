"""Running `git`: argument lists, never a shell, one clear error when it fails.

Every call goes through `git()`, which runs the real `git` binary with a fixed,
scrubbed environment: no user or system config that could add hooks, signing or
pagers (GIT_CONFIG_NOSYSTEM, GIT_CONFIG_GLOBAL=/dev/null), no terminal prompts, and a
C locale so the output this package reads is stable. The calls are synchronous: the
async callers run them in a worker thread (`anyio.to_thread`).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from echo.errors import WorkspaceError

#: The committer of every commit ECHO makes itself (a rebase, a merge).
ECHO_IDENTITY = ("echo", "echo@echo.local")


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a git child: PATH and HOME only, no user configuration."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": ECHO_IDENTITY[0], "GIT_AUTHOR_EMAIL": ECHO_IDENTITY[1],
        "GIT_COMMITTER_NAME": ECHO_IDENTITY[0], "GIT_COMMITTER_EMAIL": ECHO_IDENTITY[1],
    }
    env.update(extra or {})
    return env


def git(args: Sequence[str], *, cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None, check: bool = True,
        timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    """`git ARGS` in `cwd`; a `WorkspaceError` with git's own last line if it fails
    (`check`), else the completed process whatever its status."""
    argv = ["git", "-c", "core.hooksPath=" + os.devnull, *args]
    try:
        done = subprocess.run(argv, cwd=cwd, env=git_env(env), capture_output=True, text=True,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise WorkspaceError("git is not installed; install git to work in repositories") from None
    except subprocess.TimeoutExpired:
        raise WorkspaceError(f"git {args[0]} did not finish within {timeout:g}s") from None
    if check and done.returncode != 0:
        raise WorkspaceError(f"git {' '.join(args[:2])} failed: {last_line(done)}")
    return done


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    """git's most telling line: the last of stderr, else of stdout."""
    lines = (done.stderr.strip() or done.stdout.strip() or f"status {done.returncode}").splitlines()
    return lines[-1].strip()[:300]


def out(args: Sequence[str], *, cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None) -> str:
    """git's stdout, stripped."""
    return git(args, cwd=cwd, env=env).stdout.strip()


def ok(args: Sequence[str], *, cwd: Path | str | None = None) -> bool:
    """Whether `git ARGS` exits 0 (a question: does this ref exist?)."""
    return git(args, cwd=cwd, check=False).returncode == 0
