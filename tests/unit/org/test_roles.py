"""Roles load from agents/<role>/role.toml; bad files give one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from echo.errors import ConfigError, UnknownRole
from echo.org.roles import check_role, load_role, load_roles, role_names
from echo.paths import project_path

AGENTS = project_path("agents")


def test_the_six_shipped_roles_load() -> None:
    roles = load_roles(AGENTS)
    assert set(roles) == {
        "ceo", "cto", "chro", "product_manager", "senior_architect", "operations_head",
    }
    for name, role in roles.items():
        assert role.name == name
        assert role.keywords and role.system_prompt
        assert role.claude.skip_permissions is False  # bypass is opt-in, never shipped on
        launcher = AGENTS / name / name
        assert launcher.is_file() and launcher.stat().st_mode & 0o111


def test_a_seventh_role_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "cfo").mkdir()
    (tmp_path / "cfo" / "role.toml").write_text(
        'title = "CFO"\nresponsibilities = ["money"]\nkeywords = ["Budget"]\n'
        'system_prompt = "You are the CFO."\n'
    )
    assert role_names(tmp_path) == ["cfo"]
    assert load_role(tmp_path, "cfo").keywords == ["budget"]


def test_unknown_role_names_the_known_ones() -> None:
    with pytest.raises(UnknownRole, match="known roles: ceo, chro"):
        load_role(AGENTS, "cfo")
    with pytest.raises(UnknownRole):
        load_role(AGENTS, "../etc")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("title = ", "cannot read role file"),
        ('title = "x"\nresponsibilities = []\nkeywords=["a"]\nsystem_prompt="p"', "responsibilities"),
        ('title = "x"\nresponsibilities = ["r"]\nkeywords=["a"]\nsystem_prompt="p"\nbogus=1', "bogus"),
        (
            'title = "x"\nresponsibilities = ["r"]\nkeywords=["a"]\nsystem_prompt="p"\n'
            "[work]\nconcurrency = -1",
            "work.concurrency",
        ),
        (
            'title = "x"\nresponsibilities = ["r"]\nkeywords=["a"]\nsystem_prompt="p"\n'
            '[approval]\ntools = ["Bash(git push"]',
            "approval.tools: Value error, approval rule 'Bash(git push' is not Tool",
        ),
    ],
)
def test_bad_role_file_is_one_line(tmp_path: Path, text: str, fragment: str) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "role.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_role(tmp_path, "bad")
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_roles_are_the_folders_with_a_role_toml(tmp_path: Path) -> None:
    assert role_names(tmp_path / "missing") == []
    with pytest.raises(UnknownRole, match="no roles found under"):
        check_role("cto", tmp_path / "missing")
    (tmp_path / "agents" / "cfo").mkdir(parents=True)
    (tmp_path / "agents" / "cfo" / "role.toml").write_text("")
    (tmp_path / "agents" / "notarole").mkdir()
    assert role_names(tmp_path / "agents") == ["cfo"]
    assert check_role("all", tmp_path / "agents", allow=("all",)) == "all"
    with pytest.raises(UnknownRole, match=r"known roles: cfo$"):
        check_role("cto", tmp_path / "agents")
    with pytest.raises(UnknownRole, match="known roles: cfo, operator"):
        check_role("../cfo", tmp_path / "agents", allow=("operator",))


def test_a_roles_approval_rules_are_read_as_written(tmp_path: Path) -> None:
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "role.toml").write_text(
        'title = "Ops"\nresponsibilities = ["deploys"]\nkeywords = ["deploy"]\n'
        'system_prompt = "You run deploys."\n'
        '[approval]\ntools = ["Bash(git push:*)", "Write", "Bash(git push:*)"]\n')
    assert load_role(tmp_path, "ops").approval.tools == ["Bash(git push:*)", "Write"]
    assert load_role(AGENTS, "cto").approval.tools == []  # none unless asked for
