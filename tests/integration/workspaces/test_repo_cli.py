"""`echoctl repo ...` and `tasks submit --repo` as a user runs them: bad repositories
refused in one line (exit 2, nothing written), and a good one listed and shown."""

from __future__ import annotations

import json
from pathlib import Path

from echo.config import Settings
from tests.helpers import run_cli
from tests.integration.workspaces.gitrepo import run_git, user_repo


async def _refused(settings: Settings, *args: str) -> str:
    done = await run_cli(settings, "repo", "add", *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


async def test_bad_repositories_are_refused_in_one_line_and_nothing_is_written(
        settings: Settings, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert "not a git repository" in await _refused(settings, "app", str(plain))
    assert "no such directory" in await _refused(settings, "app", str(tmp_path / "missing"))

    repo = user_repo(tmp_path / "app")
    assert "no branch 'develop'" in await _refused(settings, "app", str(repo), "--base", "develop")
    assert "bad repository name" in await _refused(settings, "App Repo!", str(repo))

    (repo / "README.md").write_text("edited, not committed\n")
    assert "uncommitted changes" in await _refused(settings, "app", str(repo))
    run_git(repo, "checkout", "--quiet", "--", "README.md")

    run_git(repo, "checkout", "--quiet", "--detach")
    assert "detached HEAD" in await _refused(settings, "app", str(repo))
    run_git(repo, "checkout", "--quiet", "main")

    listed = await run_cli(settings, "repo", "list", "--json")
    assert json.loads(listed.stdout) == []


async def test_a_repository_is_added_listed_shown_and_named_by_tasks(
        settings: Settings, tmp_path: Path) -> None:
    repo = user_repo(tmp_path / "app")
    added = await run_cli(settings, "repo", "add", "app", str(repo), "--test-command", "true")
    assert added.returncode == 0, added.stderr
    shown = json.loads((await run_cli(settings, "repo", "show", "app", "--json")).stdout)
    assert (shown["base_branch"], shown["test_command"], shown["source"]) == \
        ("main", "true", str(repo))
    assert shown["mirror"] is None  # no task has run here yet

    again = await run_cli(settings, "repo", "add", "app", str(repo))
    assert again.returncode == 2 and "exists already" in again.stderr

    unknown = await run_cli(settings, "tasks", "submit", "edit", "--repo", "nope")
    assert unknown.returncode == 2
    assert "unknown repository 'nope'; known repositories: app" in unknown.stderr
    made = await run_cli(settings, "tasks", "submit", "edit it", "--repo", "app", "--json")
    task_id = json.loads(made.stdout)["task_id"]
    task = json.loads((await run_cli(settings, "tasks", "show", str(task_id), "--json")).stdout)
    assert task["payload"]["repo"]["name"] == "app"
    assert task["payload"]["repo"]["base_branch"] == "main"

    removed = await run_cli(settings, "repo", "remove", "app")
    assert removed.returncode == 0
    history = await run_cli(settings, "repo", "list", "--json")
    assert json.loads(history.stdout) == []


async def test_a_submitted_payload_cannot_set_what_echo_sets(settings: Settings) -> None:
    import pytest

    from echo.errors import UsageError
    from echo.org.client import Client

    async with Client(settings) as client:
        for key in ("repo", "workspace", "merge_failure"):
            with pytest.raises(UsageError, match=f"payload key '{key}' is set by ECHO"):
                await client.submit_task("x", payload={key: "/etc"})
        assert await client.tasks() == []
