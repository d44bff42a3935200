"""What a gated run is given: its PreToolUse hook, as a `--settings` file.

`hook_settings` writes two files into a folder only the worker's user can read (the
run's private directory, removed after the run): `hook.json`, what the hook needs
to reach the same database and namespace (the database's slice of the settings,
echo.slices), the task, the role, the rules and the timeout; and `settings.json`,
the CLI's settings with one PreToolUse hook whose matcher names only the gated tools.
The hook's command line is run by the CLI's shell, so every part of it is quoted
(`shlex.quote`); ECHO itself never runs a shell.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import psutil

from echo.approval_rules import Rule, hook_matcher
from echo.slices import DatabaseSettings

#: The seconds the CLI waits for the hook before it gives up on it.
HOOK_TIMEOUT = 60


def hook_command(config: Path, python: str = sys.executable) -> str:
    """The hook as the CLI runs it (through a shell, in the run's working directory).

    `-I`: isolated, so a package the run wrote into its worktree (`echo/approval_hook.py`
    answering allow) is never imported instead of ECHO's, and no PYTHON* variable or
    user site directory changes what runs. `|| exit 2`: the CLI treats any other failure
    of a hook (it could not start, an import failed, it crashed) as no objection and
    makes the call; exit 2 blocks it, so a hook that fails never lets a gated call run."""
    return f"{shlex.quote(python)} -I -m echo.approval_hook {shlex.quote(str(config))} || exit 2"


def _private_write(path: Path, data: object) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle)


def hook_folder(state_dir: Path, task_id: int) -> Path:
    """A private folder (0700) for one run's hook files, under the state directory and
    named after this worker's pid. A worker killed mid-run cannot remove its folder, so
    each new one first removes the folders of workers that are gone: ECHO's files stay
    in ECHO's own directory, never strewn over /tmp."""
    root = state_dir / "approval-hooks"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    for old in root.iterdir():
        pid = old.name.partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-task-{task_id}-", dir=root))


def hook_settings(database: DatabaseSettings, folder: Path, *, task_id: int, role: str | None,
                  rules: Sequence[Rule], timeout: float) -> Path:
    """Write the hook's files into `folder` (created 0700); the `--settings` file's path.
    The hook is given the database's slice (where to reach the approvals), nothing else
    of the settings, and `timeout`, how long a request it makes waits for a decision."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = folder / "hook.json"
    _private_write(config, {
        "database": database.model_dump(mode="json"),
        "task_id": task_id, "role": role, "rules": [str(r) for r in rules],
        "timeout": timeout,
    })
    cli = folder / "settings.json"
    _private_write(cli, {"hooks": {"PreToolUse": [{
        "matcher": hook_matcher(rules),
        "hooks": [{"type": "command", "command": hook_command(config),
                   "timeout": HOOK_TIMEOUT}],
    }]}})
    return cli
