"""The workflow's Claude decider with the REAL `claude` CLI: "no Claude here" is
remembered for a while, so a logged-out organisation does not start a CLI for every
question of every workflow only to hear the same refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from echo.config import Settings
from echo.errors import ClaudeAuthError
from echo.org.deciders import ClaudeDecider, answer, keyword_select
from echo.org.roles import load_roles
from tests.e2e import test_claude_executor as executor_tests
from tests.fakes.anthropic import FakeAnthropic

pytestmark = pytest.mark.e2e

claude_bin = executor_tests.claude_bin
api = executor_tests.api


def decider(settings: Settings, claude_bin: str, api: FakeAnthropic, tmp_path: Path,
            **kw: float) -> ClaudeDecider:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    role = load_roles(settings.agents_dir)["cto"]
    return ClaudeDecider(settings.model_copy(update={"claude_bin": claude_bin}), role,
                         env={**api.env(None), "HOME": str(home)}, **kw)


async def test_not_logged_in_is_remembered_and_asked_again_later(
    settings: Settings, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    remembering = decider(settings, claude_bin, api, tmp_path)
    for _ in range(3):
        with pytest.raises(ClaudeAuthError, match="Not logged in"):
            await remembering.ask("Take part?", time_limit=60)
    assert remembering.runs == 1  # one CLI start for three questions

    forgetful = decider(settings, claude_bin, api, tmp_path, unavailable_for=0.0)
    for _ in range(2):
        with pytest.raises(ClaudeAuthError):
            await forgetful.ask("Take part?", time_limit=60)
    assert forgetful.runs == 2  # past the window, the CLI is asked again


async def test_a_remembered_refusal_still_falls_back_with_its_reason(
    settings: Settings, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    d = decider(settings, claude_bin, api, tmp_path)
    role = load_roles(settings.agents_dir)["cto"]
    for _ in range(2):
        got = await answer(d, "Take part?", 60, lambda data: data,
                           lambda: keyword_select(role, "database migration", ""))
        assert got.source == "fallback" and "Not logged in" in str(got.fallback_reason)
    assert d.runs == 1 and api.message_requests() == []
