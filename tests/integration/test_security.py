"""Security promises with real services and real agent processes: passwords and
API keys never reach output, logs or errors; state is private (0700 folders, 0600
files); Redis AUTH is honoured; Postgres `sslmode` is passed through to the driver."""

from __future__ import annotations

import json
import shutil
import stat
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from echo import db as dbmod
from echo.config import Settings
from echo.embedded import EmbeddedRedis
from echo.paths import project_path
from tests.conftest import running_redis
from tests.helpers import all_in, org_processes, run_cli, stop_org, wait_until

DB_SECRET = "pgS3cretPw9"
REDIS_SECRET = "rdS3cretPw9"
API_KEY = "sk-ant-api03-TOPSECRETKEYxyz0123456789"


def with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    user, _, hosts = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.split(':')[0]}:{password}@{hosts}"))


@pytest.fixture
def secret_redis() -> Iterator[EmbeddedRedis]:
    """A redis-server of this test's own that requires a password (AUTH)."""
    with running_redis(REDIS_SECRET) as server:
        yield server


LEAKY_CLAUDE = textwrap.dedent("""\
    #!{python}
    # A `claude` that prints the API key it was given, then fails without a result.
    import os, sys
    sys.stdin.read()
    sys.stderr.write("auth header x-api-key: " + os.environ.get("ANTHROPIC_API_KEY", "") + "\\n")
    sys.exit(1)
""")


async def test_no_secret_in_output_logs_or_errors_and_state_is_private(
    settings: Settings, db: dbmod.Database, secret_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    agents = tmp_path / "agents"
    shutil.copytree(project_path("agents"), agents)
    fake = tmp_path / "claude"
    fake.write_text(LEAKY_CLAUDE.format(python=sys.executable))
    fake.chmod(0o755)
    s = settings.model_copy(update={
        "database_url": with_password(settings.database_url or "", DB_SECRET),
        "redis_url": secret_redis.url, "agents_dir": agents, "claude_bin": str(fake),
        "state_dir": tmp_path / "private-state", "log_level": "DEBUG",
    })
    assert DB_SECRET in (s.database_url or "") and REDIS_SECRET in (s.redis_url or "")
    env = {"ANTHROPIC_API_KEY": API_KEY}
    outputs: list[str] = []

    async def cli(*args: str, ok: bool = True, **extra: str) -> str:
        done = await run_cli(s, *args, timeout=120, **{**env, **extra})
        outputs.append(done.stdout + done.stderr)
        if ok:
            assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    try:
        await cli("status")  # before anything runs
        await cli("up", "--detach", "--roles", "ceo,cto")
        await wait_until(all_in(s, "healthy", ["ceo", "cto"]), timeout=60, interval=0.1)
        await cli("status")
        await cli("status", "--json")
        await cli("db", "status")
        await cli("broadcast", "hello", "--body", "secret-free body")
        await cli("messages")
        task = json.loads(await cli("tasks", "submit", "leak your key", "--role", "cto",
                                    "--max-retries", "0", "--json"))
        task_id = str(task.get("task_id") or task.get("id"))

        async def failed() -> bool:
            async with db.acquire() as conn:
                return await conn.fetchval(
                    "SELECT status FROM agent_tasks WHERE task_id = $1", int(task_id)) in ("failed", "dead")

        await wait_until(failed, timeout=60, interval=0.1)
        shown = await cli("tasks", "show", task_id)
        assert "without a JSON result" in shown or "exited with status 1" in shown, shown
        await cli("logs", "cto")
        await cli("logs", "org")
        # Errors that quote a URL: a database that is not there, a Redis password that is wrong.
        await cli("broadcast", "x", ok=False,
                  ECHO_DATABASE_URL=f"postgresql://u:{DB_SECRET}@127.0.0.1:1/x", ECHO_CONNECT_TIMEOUT="1")
        await cli("broadcast", "wrong redis password",
                  ECHO_REDIS_URL=f"redis://:{DB_SECRET}@127.0.0.1:{secret_redis.port}/0")
        await cli("db", "status", ok=False, ECHO_DATABASE_URL=f"postgresql://u:{DB_SECRET}@h:bad/x")
        await cli("down")
    finally:
        stop_org(s)
    assert org_processes(s) == []

    files = [p for p in s.state_dir.rglob("*") if p.is_file() and not p.is_socket()]
    assert any(p.suffix == ".log" for p in files)
    texts = outputs + [p.read_text(errors="replace") for p in files]
    for secret in (DB_SECRET, REDIS_SECRET, API_KEY, API_KEY[len("sk-ant-"):]):
        leaks = [t[max(0, t.find(secret) - 80): t.find(secret) + 40] for t in texts if secret in t]
        assert leaks == [], f"{secret!r} leaked: {leaks[:2]}"

    for folder in [s.state_dir, *(p for p in s.state_dir.rglob("*") if p.is_dir())]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path} is readable by others"


async def test_redis_auth_is_honoured(settings: Settings, secret_redis: EmbeddedRedis) -> None:
    right = await run_cli(settings, "broadcast", "with auth", "--json",
                          ECHO_REDIS_URL=secret_redis.url)
    assert right.returncode == 0, right.stderr
    assert json.loads(right.stdout)["published"] is True
    for url in (f"redis://127.0.0.1:{secret_redis.port}/0",  # no password: NOAUTH
                f"redis://:not-{REDIS_SECRET}@127.0.0.1:{secret_redis.port}/0"):
        wrong = await run_cli(settings, "broadcast", "without auth", ECHO_REDIS_URL=url)
        assert wrong.returncode == 0, wrong.stderr  # stored; the relay announces it later
        assert "Redis is unavailable" in wrong.stdout
        assert REDIS_SECRET not in wrong.stdout + wrong.stderr


async def test_postgres_sslmode_is_passed_through(settings: Settings, db: dbmod.Database) -> None:
    dsn = settings.database_url or ""
    sep = "&" if "?" in dsn else "?"
    async with db.acquire() as conn:
        server_ssl = await conn.fetchval("SHOW ssl")
    plain = settings.model_copy(update={"database_url": f"{dsn}{sep}sslmode=disable"})
    database = await dbmod.Database.open(plain.database, max_size=1)
    try:
        async with database.acquire() as conn:
            assert await conn.fetchval(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") in (False, None)
    finally:
        await database.close()

    required = await run_cli(settings, "db", "status", ECHO_DATABASE_URL=f"{dsn}{sep}sslmode=require",
                             ECHO_CONNECT_TIMEOUT="2")
    tcp = urlsplit(dsn).hostname not in (None, "")
    if server_ssl == "off" and tcp:  # the driver asked for TLS and the server has none
        assert required.returncode == 1
        lines = required.stderr.strip().splitlines()
        assert len(lines) == 1 and "unavailable" in lines[0] and "SSL" in lines[0], required.stderr
    else:  # a server with TLS, or a Unix socket (where libpq does not use TLS)
        assert required.returncode == 0, required.stderr

    bogus = await run_cli(settings, "db", "status", ECHO_DATABASE_URL=f"{dsn}{sep}sslmode=bogus")
    assert bogus.returncode in (1, 2) and len(bogus.stderr.strip().splitlines()) == 1
    assert "sslmode" in bogus.stderr and "Traceback" not in bogus.stderr
