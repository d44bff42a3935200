"""The console when what it depends on fails: Postgres gone (503, then recovery on
its own, the event stream included) and a port taken while it runs (the
organisation stays up without its console)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import httpx

from echo.config import Settings
from echo.console.auth import token_path
from echo.db import migrate
from echo.org.node.state import read_org
from tests.console_org import NO_CLAUDE
from tests.helpers import all_in, cli_env, run_cli, wait_until


async def test_database_down_answers_503_then_recovers_with_live_events(
    own_postgres, namespace: str, tmp_path: Path
) -> None:
    from tests.conftest import make_settings

    # A password in the URL (trust auth ignores it) must never reach a response.
    dsn = own_postgres.dsn.replace("postgres@", "postgres:sekret-pw@", 1)
    assert "sekret-pw" in dsn
    s = make_settings(dsn, None, namespace, tmp_path / "state")
    s = s.model_copy(update={"connect_timeout": 1.0, "command_timeout": 2.0})
    await migrate(s.database)
    proc = subprocess.Popen([sys.executable, "-m", "echo.console", "--port", "0"], env=cli_env(s),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = (await anyio.to_thread.run_sync(proc.stdout.readline)).decode()
        assert line.startswith("ECHO-READY console http://127.0.0.1:"), line
        url = line.split()[-1]
        headers = {"Authorization": f"Bearer {token_path(s).read_text().strip()}"}
        answers: list[str] = []

        async def record(response: httpx.Response) -> None:
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                return  # an endless stream: not read here
            await response.aread()
            answers.append(response.text)

        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30,
                                     event_hooks={"response": [record]}) as c:
            assert (await c.get("/health")).status_code == 200
            assert (await c.get("/api/v1/agents")).json()["organisation"]["database"]

            await anyio.to_thread.run_sync(own_postgres.stop, "immediate")
            down = await c.get("/health")
            assert down.status_code == 503 and down.json()["status"] == "down"
            assert down.json()["database"] == "unreachable"
            for method, path, body in [("GET", "/api/v1/tasks", None), ("GET", "/api/v1/messages", None),
                                       ("POST", "/api/v1/messages", {"subject": "lost?"})]:
                answer = await c.request(method, path, json=body)
                assert answer.status_code == 503, (path, answer.text)
                error = answer.json()["error"]
                assert "unavailable" in error and "\n" not in error
                assert "password" not in error

            await anyio.to_thread.run_sync(own_postgres.start)

            async def healthy_again() -> bool:
                return (await c.get("/health")).status_code == 200

            await wait_until(healthy_again, timeout=60, interval=0.2)
            # The one LISTEN connection came back too: a new message arrives live.
            async with c.stream("GET", "/api/v1/events") as stream:
                sent = (await c.post("/api/v1/messages", json={"subject": "after the outage"})).json()
                with anyio.fail_after(30):
                    async for raw in stream.aiter_lines():
                        data = json.loads(raw[6:]) if raw.startswith("data: ") else {}
                        if data.get("subject_id") == str(sent["db_id"]):
                            break
            assert [m["subject"] for m in (await c.get("/api/v1/messages")).json()] == ["after the outage"]
        assert len(answers) >= 8 and not [a for a in answers if "sekret-pw" in a]
        assert any("postgres:***@" in a for a in answers)  # shown, redacted
    finally:
        proc.terminate()
        await anyio.to_thread.run_sync(proc.wait)


async def test_a_port_taken_at_a_restart_leaves_the_organisation_up_without_its_console(
    org_settings: Settings,
) -> None:
    """`up` refuses a taken port at the start (tests/integration/console/test_usage_lines.py);
    when another program takes the port while the organisation runs, the console's
    restarts fail, one line each in console.log, and the agents stay up."""
    s = org_settings.model_copy(update={"console": True})
    with socket.socket() as probe:  # a free port, for the console to start on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = await run_cli(s, "up", "--roles", "ceo,cto", "--detach", "--console-port", str(port),
                            timeout=120, **NO_CLAUDE)
    assert started.returncode == 0, started.stderr
    await wait_until(all_in(s, "healthy", ["ceo", "cto"]), timeout=60, interval=0.1)
    await wait_until(lambda: bool((r := read_org(s)) and r.console_url), timeout=60, interval=0.1)
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

        def grabbed() -> bool:
            """Kill the console until the port is ours (its restart may win a round)."""
            try:
                taken.bind(("127.0.0.1", port))
            except OSError:
                record = read_org(s)
                if record and record.console and record.console.pid and record.console.state == "running":
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(record.console.pid, signal.SIGKILL)
                return False
            taken.listen()
            return True

        await wait_until(grabbed, timeout=60, interval=0.02)
        log_path = s.log_dir / "console.log"

        def failed_twice() -> bool:
            text = log_path.read_text(errors="replace") if log_path.exists() else ""
            return text.count("the port is taken") >= 2

        await wait_until(failed_twice, timeout=60, interval=0.2)
        logged = log_path.read_text(errors="replace")
        assert "Traceback" not in logged and "ExceptionGroup" not in logged
        failures = [line for line in logged.splitlines() if "the port is taken" in line]
        assert all(line.startswith("error: ") and "--console-port" in line for line in failures)
        record = read_org(s)
        assert record is not None and record.state == "running" and record.console_url is None
        status = await run_cli(s, "status", "--json")
        assert {a["role"]: a["state"] for a in json.loads(status.stdout)["agents"]
                if a["role"] in ("ceo", "cto")} == {"ceo": "healthy", "cto": "healthy"}
