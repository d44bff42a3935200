from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest

from echo.paths import project_path
from tests.console_org import Console, organisation_with_console


@pytest.fixture(scope="module")
async def org(
    pg_dsn: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Console]:
    base = tmp_path_factory.mktemp("console-org")
    shutil.copytree(project_path("agents"), base / "agents")
    async for console in organisation_with_console(pg_dsn, redis_url, base, base / "agents"):
        yield console
