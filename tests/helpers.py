"""Helpers every test area shares: running `echoctl` as a user would, and waiting."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Awaitable, Callable

import anyio

from echo.config import Settings


def cli_env(s: Settings, **extra: str) -> dict[str, str]:
    """The environment of a child `echoctl`: this test's settings and nothing stray."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHO_")}
    env.update(s.child_env())
    env.update(extra)
    return env


def echoctl(s: Settings, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m echo ARGS` in a subprocess with `s` as its settings."""
    return subprocess.run(
        [sys.executable, "-m", "echo", *args],
        env=cli_env(s, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


async def run_cli(
    s: Settings, *args: str, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    return await anyio.to_thread.run_sync(lambda: echoctl(s, *args, timeout=timeout, **env))


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll a condition with a deadline, for state that has no event to await
    (another process's files, a row another process writes)."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.05
) -> None:
    with anyio.fail_after(timeout):
        while not await predicate():
            await anyio.sleep(interval)
