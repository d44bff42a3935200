"""Helpers every test area shares: running `echoctl` as a user would, and waiting."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable

import anyio
import psutil

from echo.config import Settings

ROLES = ["ceo", "cto", "chro", "product_manager", "senior_architect", "operations_head"]


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


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, interval: float = 0.01
) -> None:
    """Poll a condition, plain or async, with a deadline: for state that has no event to
    await (another process's files, a row another process writes, a pool's counters)."""
    with anyio.fail_after(timeout):
        while True:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return
            await anyio.sleep(interval)


async def states(s: Settings) -> dict[str, str]:
    """Each agent's state as `echoctl status` reports it (this machine's state dir only)."""
    from echo.org.client import Client

    async with Client(s) as client:
        return {a.role: a.state for a in (await client.status(remote=False)).agents}


def all_in(s: Settings, state: str, roles: list[str] = ROLES) -> Callable[[], Awaitable[bool]]:
    """A condition for `wait_until`: every role in `roles` is in `state`."""

    async def check() -> bool:
        current = await states(s)
        return all(current.get(r) == state for r in roles)

    return check


def org_processes(s: Settings) -> list[psutil.Process]:
    """Every live process started for this test's organisation, found by its state dir."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid == os.getpid():
                continue
            if (proc.environ().get("ECHO_STATE_DIR") == str(s.state_dir)
                    and proc.status() != psutil.STATUS_ZOMBIE):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop_org(s: Settings) -> None:
    """`echoctl down`, then kill whatever is left: nothing may outlive a test."""
    echoctl(s, "down", "--timeout", "30")
    for proc in org_processes(s):
        proc.kill()


def claude_children() -> list[psutil.Process]:
    """This test process's `claude` descendants (a CLI run, a kept session) still running."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "claude" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue  # it ended while we looked
    return found


def no_claude_left() -> None:
    assert claude_children() == []
