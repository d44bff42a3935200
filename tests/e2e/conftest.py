"""Every e2e test leaves no `claude` process behind: one a failing test left running
would otherwise be counted by the next test's own check and fail it too (CI, 2026-12-02:
one StopIteration became four failures). Leftovers are killed here and the test that
left them fails at teardown, naming them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psutil
import pytest

from tests.helpers import claude_children


@pytest.fixture(autouse=True)
def no_claude_outlives_its_test() -> Iterator[None]:
    yield
    left = claude_children()
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(left, timeout=10)
    assert not left, f"the test left claude processes running: {[p.pid for p in left]}"
