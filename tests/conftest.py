"""The test harness: real Postgres and Redis, one namespace per test.

CI sets ECHO_TEST_DATABASE_URL and ECHO_TEST_REDIS_URL to the machine's services.
Where they are unset (a laptop), the suite starts its own embedded servers. A test
whose server cannot be had is skipped with the reason, unless ECHO_REQUIRE_SERVICES=1
(set by .ci/run), which makes that a failure.

Each test gets its own namespace: a Postgres schema and a Redis channel prefix, so
tests never see each other's rows or messages, and a schema left by a killed run
is dropped by a later one.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from echo.config import Settings
from echo.db import Database, drop_namespace, migrate
from echo.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from echo.errors import EchoError
from echo.paths import project_path
from echo.slices import BusSettings
from tests import lanes

STALE_AFTER_S = 3600


def unavailable(reason: str) -> None:
    if os.environ.get("ECHO_REQUIRE_SERVICES") == "1":
        pytest.fail(f"ECHO_REQUIRE_SERVICES=1 and {reason}")
    pytest.skip(reason)


#: Markers of the tests that run apart (`alone`): in the alone phase of `make test`
#: (tests/suite.py), one at a time in each of their lanes (tests/lanes.py), beside the
#: parallel phase, which runs at a lower CPU priority. They kill, stop or fail servers
#: over and wait for the recovery, load both cores for a minute (a wheel build, the
#: claude CLI, Chromium), or wait on a clock (a decider's timeout, a usage limit's reset,
#: a page's 30 s), so among the parallel phase's tests they would be late, or make others late.
ALONE_MARKERS = ("chaos", "package", "e2e", "browser", "alone")
#: Their hang guard: an organisation started, a server failed over and 100 tasks run
#: took 212 s on a 2-core machine at load 15-30 (the failover test hit the default 120 s).
ALONE_TIMEOUT_S = 300


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Module | pytest.Class, name: str, obj: object) -> None:
    """Every `async def` test runs on anyio's asyncio backend without a marker. It is
    marked here, as it is collected, where anyio's plugin looks: marked later, anyio
    re-creates the item at the end of collection and drops the markers given to it
    (`alone`, its timeout, its xdist group: pytest_collection_modifyitems)."""
    if collector.istestfunction(obj, name):
        inner = getattr(getattr(obj, "hypothesis", None), "inner_test", obj)
        if inspect.iscoroutinefunction(inner):
            pytest.mark.anyio(obj)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """For the parallel workers (pytest-xdist, `--dist loadgroup`): a test that uses a
    module-scoped fixture (an organisation, a browser, an installed wheel) runs on one
    worker with the rest of its module, so that fixture is built once, not once per
    worker. Tests of ALONE_MARKERS are marked `alone`, with a longer hang guard, and
    put in their lane of the alone phase (tests/lanes.py): a lane is one xdist group, so
    its module-scoped fixtures stay on its one worker too. First of the hooks: xdist's
    own turns the groups into node ids (`...@group`) in a worker's session, and a test
    marked after it ran is in no group. (Both that and pytest 9.2, whose node ids ignore
    what xdist sets, had every module's tests spread over both workers, each building
    the module's organisation: pyproject.toml keeps pytest below 9.2.)"""
    for item in items:
        if any(item.get_closest_marker(name) for name in ALONE_MARKERS) \
                or item.nodeid.startswith("tests/browser/"):  # marked by its own conftest
            item.add_marker(pytest.mark.alone)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(ALONE_TIMEOUT_S))
            item.add_marker(pytest.mark.xdist_group(lanes.lane_of(item.nodeid)))
            continue
        fixtures = getattr(item, "_fixtureinfo", None)
        if fixtures is not None and any(
            defs[-1].scope == "module" for defs in fixtures.name2fixturedefs.values()
        ):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__ if item.module else item.nodeid))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """With ECHO_TEST_TALLY set (tests/suite.py), write this run's counts there as JSON,
    so the phases of `make test` add up to one closing line."""
    path = os.environ.get("ECHO_TEST_TALLY")
    if not path or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    import json

    counts = {key: len(terminalreporter.stats.get(key, []))
              for key in ("passed", "failed", "error", "skipped", "xfailed", "xpassed")}
    Path(path).write_text(json.dumps(counts))


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def pg_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Postgres every test shares (each in its own schema)."""
    dsn = os.environ.get("ECHO_TEST_DATABASE_URL")
    server = None
    if not dsn:
        server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"), port=free_port())
        try:
            dsn = server.start()
        except EchoError as exc:
            unavailable(f"no Postgres: ECHO_TEST_DATABASE_URL unset and embedded failed ({exc})")
    assert dsn
    _drop_stale_schemas(dsn)
    yield dsn
    if server is not None:
        server.destroy()


def _drop_stale_schemas(dsn: str) -> None:
    """Schemas of runs that were killed before their teardown."""
    import asyncio

    async def run() -> None:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except (OSError, asyncpg.PostgresError) as exc:
            unavailable(f"cannot reach test Postgres ({exc})")
            return
        try:
            rows = await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%'")
            cutoff = time.time() - STALE_AFTER_S
            for row in rows:
                parts = row["nspname"].split("_")
                if len(parts) == 3 and parts[1].isdigit() and int(parts[1]) < cutoff:
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{row["nspname"]}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The Redis every test shares (each with its own channel prefix)."""
    url = os.environ.get("ECHO_TEST_REDIS_URL")
    server = None
    if not url:
        server = EmbeddedRedis()
        try:
            url = server.start()
        except EchoError as exc:
            unavailable(f"no Redis: ECHO_TEST_REDIS_URL unset and embedded failed ({exc})")
    assert url
    yield url
    if server is not None:
        server.stop()


@pytest.fixture
def namespace() -> str:
    return f"t_{int(time.time())}_{secrets.token_hex(4)}"


def make_settings(dsn: str, redis: str | None, namespace: str, state_dir: Path) -> Settings:
    return Settings(
        env="test",
        database_url=dsn,
        redis_url=redis,
        namespace=namespace,
        state_dir=state_dir,
        poll_interval=0.2,
        worker_check_interval=0.2,
        # The console is tested where it is asked for (tests/integration/console,
        # tests/browser): elsewhere it would only add a process to every organisation.
        console=False,
        console_port=0,  # when it runs, each organisation's console on a free port
    )


@pytest.fixture
async def settings(
    pg_dsn: str, redis_url: str, namespace: str, tmp_path: Path
) -> AsyncIterator[Settings]:
    """Settings for one isolated organisation, schema migrated, on Postgres and Redis."""
    s = make_settings(pg_dsn, redis_url, namespace, tmp_path / "state")
    await migrate(s.database)
    yield s
    await drop_namespace(s.database)


@pytest.fixture
async def notify_settings(settings: Settings) -> Settings:
    """The same organisation with no Redis: real-time delivery over LISTEN/NOTIFY."""
    return settings.model_copy(update={"redis_url": None})


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    """A pool that fails the test if any connection came back inside a transaction."""
    database = await Database.open(settings.database, max_size=4)
    yield database
    leaks = database.leaks
    await database.close()
    assert leaks == 0, f"{leaks} connection(s) were released inside an open transaction"


@pytest.fixture
def bus(settings: Settings) -> BusSettings:
    """The bus's slice of the test's settings (a publisher's, a subscriber's)."""
    return settings.bus


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A Postgres this test may stop, kill and restart; never the shared one."""
    server = EmbeddedPostgres(tmp_path / "own-pg", port=free_port())
    try:
        server.start()
    except EchoError as exc:
        unavailable(f"cannot start an embedded Postgres ({exc})")
    yield server
    server.destroy()


@contextlib.contextmanager
def running_redis(password: str | None = None) -> Iterator[EmbeddedRedis]:
    """A redis-server of the test's own (with AUTH if `password`), stopped afterwards."""
    server = EmbeddedRedis(password=password)
    try:
        server.start()
    except EchoError as exc:
        unavailable(f"cannot start a redis-server ({exc})")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A redis-server this test may stop and restart; never the shared one."""
    with running_redis() as server:
        yield server


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    """A private copy of agents/, so a test may break a role file."""
    target = tmp_path / "agents"
    shutil.copytree(project_path("agents"), target)
    return target


@pytest.fixture
def org_settings(settings: Settings, agents_dir: Path) -> Iterator[Settings]:
    """Settings for an organisation of real agent processes, stopped after the test."""
    from tests.helpers import org_processes, stop_org

    s = settings.model_copy(update={"agents_dir": agents_dir})
    yield s
    stop_org(s)
    assert org_processes(s) == []
