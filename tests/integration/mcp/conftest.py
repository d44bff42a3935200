from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator

import pytest

from echo.config import Settings
from echo.db import drop_namespace, migrate


@pytest.fixture(scope="module")
async def mcp_settings(pg_dsn: str, redis_url: str,
                       tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Settings]:
    """One migrated namespace for the module: no agent runs, the servers need none (a
    heartbeat row stands for an agent that is up where a workflow needs one)."""
    from tests.conftest import make_settings

    s = make_settings(pg_dsn, redis_url, f"t_{int(time.time())}_{secrets.token_hex(4)}",
                      tmp_path_factory.mktemp("mcp") / "state")
    await migrate(s.database)
    yield s
    await drop_namespace(s.database)
