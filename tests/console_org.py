"""A running organisation with its console, for the API and browser tests.

Started once per test module (six agent processes and a console cost seconds of
CPU on two cores), on its own namespace and state directory, and stopped after.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from echo.config import Settings
from echo.console.auth import token_path
from echo.db import drop_namespace, migrate
from echo.org.console_address import read_listening
from echo.org.node.state import read_org
from tests.helpers import ROLES, all_in, cli_env, org_processes, run_cli, stop_org, wait_until

NO_CLAUDE = {"ECHO_CLAUDE_BIN": "/nonexistent/claude"}


@dataclass
class Console:
    settings: Settings
    url: str
    token: str

    def client(self, token: str | None = None, **kwargs: object) -> httpx.AsyncClient:
        """An HTTP client for the console, with the token (or `token`, "" for none)."""
        used = self.token if token is None else token
        headers = {"Authorization": f"Bearer {used}"} if used else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]


def console_url(s: Settings) -> str | None:
    record = read_org(s)
    return record.console_url if record else None


async def up_with_console(s: Settings, roles: list[str] = ROLES, *args: str) -> Console:
    started = await run_cli(s, "up", "--roles", ",".join(roles), "--detach", *args, timeout=120, **NO_CLAUDE)
    assert started.returncode == 0, started.stderr
    assert "console at http://127.0.0.1:" in started.stdout, started.stdout
    assert "token in" in started.stdout
    await wait_until(all_in(s, "healthy", roles), timeout=90, interval=0.1)
    await wait_until(lambda: bool(console_url(s)), timeout=60, interval=0.1)
    url = console_url(s)
    assert url
    return Console(s, url, token_path(s).read_text().strip())


async def organisation_with_console(
    pg_dsn: str, redis_url: str | None, base: Path, agents_dir: Path
) -> AsyncIterator[Console]:
    """A module's organisation: migrate, up (with the console), yield, down, drop."""
    from tests.conftest import make_settings

    namespace = f"t_{int(time.time())}_{secrets.token_hex(4)}"
    s = make_settings(pg_dsn, redis_url, namespace, base / "state")
    s = s.model_copy(update={"agents_dir": agents_dir, "console": True})
    await migrate(s.database)
    try:
        yield await up_with_console(s)
    finally:
        stop_org(s)
        assert org_processes(s) == []
        await drop_namespace(s.database)


@contextlib.asynccontextmanager
async def console_alone(s: Settings) -> AsyncIterator[Console]:
    """The console without the organisation (`echoctl serve --port 0`, a real server on
    `s`'s Postgres and Redis), stopped after: what refusing input or serving MCP needs,
    at a fraction of an organisation's start."""
    server = subprocess.Popen([sys.executable, "-m", "echo", "serve", "--port", "0"],
                              env=cli_env(s), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await wait_until(lambda: read_listening(s) is not None or server.poll() is not None,
                         timeout=60, interval=0.05)
        here = read_listening(s)
        assert here is not None, server.communicate()[1]
        yield Console(s, here.url, token_path(s).read_text().strip())
    finally:
        server.terminate()
        server.communicate(timeout=30)
