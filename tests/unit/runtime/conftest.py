"""Runtime unit tests run on anyio's asyncio backend; they need no services."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
