"""The settings slices (echo.slices): assembled from Settings in one place, frozen."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from echo.config import Settings
from echo.slices import BusSettings, DatabaseSettings, LeaseSettings


def test_each_slice_carries_the_values_of_the_settings(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path, namespace="t_slices", redis_url="redis://127.0.0.1:6379/2",
                 pool_size=3, poll_interval=0.5, prefer="cto, ceo", claude_bin="my-claude",
                 approval_tools=["Bash(git push:*)"], budget_timezone="Europe/Paris")
    assert s.database == DatabaseSettings(
        database_url=s.database_url, namespace="t_slices", state_dir=tmp_path, pool_size=3,
        connect_timeout=s.connect_timeout, command_timeout=s.command_timeout)
    assert (s.bus.redis_url, s.bus.namespace, s.bus.poll_interval) == (s.redis_url, "t_slices", 0.5)
    assert s.leases.preferred_roles == {"cto", "ceo"} and s.leases.node == s.node
    assert s.claude.claude_bin == "my-claude" and s.claude.approval_tools == ("Bash(git push:*)",)
    assert s.governor.budget_timezone == "Europe/Paris"
    assert (s.work.state_dir, s.work.node) == (tmp_path, s.node)


def test_a_copy_of_the_settings_has_its_own_slices(tmp_path: Path) -> None:
    """Nothing is cached: a copy with another Redis is a bus on that Redis."""
    s = Settings(state_dir=tmp_path, redis_url="redis://127.0.0.1:6379/0")
    assert s.bus.redis_url == "redis://127.0.0.1:6379/0"
    assert s.model_copy(update={"redis_url": None}).bus.redis_url is None


def test_a_slice_is_frozen_and_built_without_the_environment(tmp_path: Path) -> None:
    leases = LeaseSettings(node="n1", lease_seconds=5.0, lease_renew_interval=1.0,
                           lease_takeover_grace=0.0, prefer="")
    with pytest.raises(pydantic.ValidationError):
        leases.node = "n2"  # type: ignore[misc]
    assert leases.model_copy(update={"lease_seconds": 60.0}).lease_seconds == 60.0
    with pytest.raises(pydantic.ValidationError):  # every field is required: no second defaults
        BusSettings(redis_url=None, namespace="x")  # type: ignore[call-arg]
