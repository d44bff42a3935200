"""How `tasks show` describes a task's branch: where it lives, so a user knows whether
a retry on another machine can continue it (a pushed branch) or starts over."""

from __future__ import annotations

from echo.org.repos import workspace_lines

WS = {"repo": "app", "branch": "echo/cto/task-7", "base_branch": "main",
      "base_commit": "a" * 40, "head": "b" * 40, "changed": True, "files": ["x.py"],
      "diffstat": " x.py | 1 +", "host": "build-2"}


def test_a_branch_only_here_says_which_machine_has_it() -> None:
    lines = workspace_lines({**WS, "pushed": False})
    assert lines[1] == ("the branch is on build-2 only: a retry there continues it, one elsewhere "
                        "starts from the base (add the repository with --push to continue anywhere)")


def test_a_pushed_branch_continues_anywhere() -> None:
    lines = workspace_lines({**WS, "pushed": True})
    assert lines[1] == "the branch is pushed to the repository: a retry continues on any machine"
    assert "build-2" not in "\n".join(lines)
