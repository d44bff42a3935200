"""Simple mistakes around the console get one clear line, never a traceback.

Each test runs the real `echoctl` (or the console's own entry point, which `up`
starts as a child) in a subprocess, as a user would. A port is "taken" by a socket
the test itself holds open for the length of the run.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import anyio
import pytest

from echo.config import Settings
from echo.org.node.state import read_org
from tests.helpers import cli_env, org_processes, run_cli


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that this test holds (listening) until it ends."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield holder.getsockname()[1]


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


async def test_serve_on_a_taken_port_says_so_and_names_its_own_option(
    settings: Settings, taken_port: int
) -> None:
    done = await run_cli(settings, "serve", "--port", str(taken_port))
    said = lines(done.stderr)
    assert len(said) == 1, done.stderr
    assert "Traceback" not in done.stderr and "ExceptionGroup" not in done.stderr
    assert f"127.0.0.1:{taken_port}" in said[0] and "taken" in said[0]
    assert "--port" in said[0] and "--console-port" not in said[0]  # serve has no --console-port
    assert done.returncode == 1  # the environment's state, not a malformed command


async def test_an_unknown_log_level_is_a_usage_error_in_one_line(settings: Settings) -> None:
    done = await run_cli(settings, "--log-level", "LOUD", "status")
    said = lines(done.stderr)
    assert len(said) == 1, done.stderr
    assert "LOUD" in said[0] and "--log-level" in said[0]
    assert "DEBUG" in said[0] and "ERROR" in said[0]  # what to use instead
    assert done.returncode == 2


async def test_a_known_log_level_in_any_case_is_accepted(settings: Settings) -> None:
    done = await run_cli(settings, "--log-level", "debug", "tasks", "list")
    assert done.returncode == 0, done.stderr


async def test_up_with_the_console_port_taken_is_refused_before_anything_starts(
    org_settings: Settings, taken_port: int
) -> None:
    s = org_settings.model_copy(update={"console": True})
    done = await run_cli(s, "up", "--detach", "--roles", "cto", "--console-port", str(taken_port),
                         timeout=120)
    said = lines(done.stderr)
    assert len(said) == 1, done.stderr + done.stdout
    assert f"127.0.0.1:{taken_port}" in said[0] and "taken" in said[0]
    assert "--console-port" in said[0] and "--no-console" in said[0]
    assert done.returncode == 1
    assert org_processes(s) == []  # nothing was started
    record = read_org(s)
    assert record is None or record.state != "running"


async def test_the_console_child_logs_one_line_per_failure(settings: Settings, taken_port: int) -> None:
    """What `up` runs as the organisation's console: its log (console.log) gets one line."""
    done = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "echo.console", "--host", "127.0.0.1", "--port", str(taken_port)],
        env=cli_env(settings), capture_output=True, text=True, timeout=60, check=False,
        stdin=subprocess.DEVNULL))
    said = lines(done.stderr)
    assert len(said) == 1, done.stderr
    assert said[0].startswith("error: ") and "taken" in said[0] and "--console-port" in said[0]
    assert done.returncode == 1
