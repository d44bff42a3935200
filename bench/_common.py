"""What the benchmarks share: where the services come from, and the JSON line format.

Services: ECHO_BENCH_DATABASE_URL / ECHO_BENCH_REDIS_URL, else ECHO_TEST_*, else
embedded servers started here. Each run works in its own namespace and drops it.
Each figure is one JSON line with the baseline measured in the same run, because
on a shared 2-core machine only a ratio taken side by side means anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

from echo import db as dbmod
from echo.config import Settings
from echo.embedded import EmbeddedPostgres, EmbeddedRedis, free_port


def emit(
    bench: str, figure: str, value: float, *, baseline: str, baseline_value: float, **extra: Any
) -> None:
    line: dict[str, Any] = {
        "bench": bench,
        "figure": figure,
        "value": round(value, 3),
        "baseline": baseline,
        "baseline_value": round(baseline_value, 3),
        "ratio": round(value / baseline_value, 3) if baseline_value else None,
    }
    line.update(extra)
    print(json.dumps(line), flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.asynccontextmanager
async def bench_settings(prefix: str, *, redis: bool = True, **overrides: Any) -> AsyncIterator[Settings]:
    """Settings for one benchmark run in a fresh namespace, migrated, dropped afterwards."""
    dsn = os.environ.get("ECHO_BENCH_DATABASE_URL") or os.environ.get("ECHO_TEST_DATABASE_URL")
    redis_url = os.environ.get("ECHO_BENCH_REDIS_URL") or os.environ.get("ECHO_TEST_REDIS_URL")
    tmp = Path(tempfile.mkdtemp(prefix=f"echo-bench-{prefix}-"))
    pg = rd = None
    if not dsn:
        pg = EmbeddedPostgres(tmp / "pg", port=free_port())
        dsn = await anyio.to_thread.run_sync(pg.start)
    if redis and not redis_url:
        rd = EmbeddedRedis()
        redis_url = await anyio.to_thread.run_sync(rd.start)
    s = Settings(
        database_url=dsn,
        redis_url=redis_url if redis else None,
        namespace=f"bench_{prefix}_{secrets.token_hex(3)}",
        state_dir=tmp / "state",
        **overrides,
    )
    await dbmod.migrate(s.database)
    try:
        yield s
    finally:
        with contextlib.suppress(Exception):
            await dbmod.drop_namespace(s.database)
        if rd is not None:
            rd.stop()
        if pg is not None:
            await anyio.to_thread.run_sync(pg.destroy)
        shutil.rmtree(tmp, ignore_errors=True)  # the run's state directory: nothing left behind
