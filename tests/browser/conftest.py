"""Browser tests: Playwright driving Debian's `chromium` (/usr/bin/chromium).

Playwright's own browser download is never used (it is not reachable from every
machine): `make setup-browser` installs the distribution's chromium where apt-get
exists. Without chromium (or the playwright package) these tests are skipped with
the reason, or fail under ECHO_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

from echo.paths import project_path
from tests.conftest import unavailable
from tests.console_org import Console, organisation_with_console

CHROMIUM = os.environ.get("ECHO_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("the playwright package is not installed; run `make setup`")
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"no chromium at {CHROMIUM}; run `make setup-browser` (apt-get install chromium)")
    async with async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(scope="module")
async def org(
    pg_dsn: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Console]:
    base = tmp_path_factory.mktemp("console-browser")
    shutil.copytree(project_path("agents"), base / "agents")
    async for console in organisation_with_console(pg_dsn, redis_url, base, base / "agents"):
        yield console
