"""The console when what it depends on fails: Postgres gone (503, then recovery on
its own, the event stream included) and a port already taken (the organisation
stays up without its console)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import httpx

from echo.config import Settings
from echo.console.auth import token_path
from echo.db import migrate
from echo.org.state import read_org
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
    await migrate(s)
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


async def test_a_taken_port_leaves_the_organisation_up_without_its_console(org_settings: Settings) -> None:
    s = org_settings.model_copy(update={"console": True})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = await run_cli(s, "up", "--roles", "ceo,cto", "--detach", "--console-port", str(port),
                                timeout=120, **NO_CLAUDE)
        assert started.returncode == 0, started.stderr
        await wait_until(all_in(s, "healthy", ["ceo", "cto"]), timeout=60, interval=0.1)

        def tried_and_failed() -> bool:
            return "cannot listen" in (s.log_dir / "console.log").read_text(errors="replace") \
                if (s.log_dir / "console.log").exists() else False

        await wait_until(tried_and_failed, timeout=60, interval=0.2)
        record = read_org(s)
        assert record is not None and record.state == "running" and record.console_url is None
        assert "not up yet" in started.stdout or "console at" not in started.stdout
        status = await run_cli(s, "status", "--json")
        assert {a["role"]: a["state"] for a in json.loads(status.stdout)["agents"]
                if a["role"] in ("ceo", "cto")} == {"ceo": "healthy", "cto": "healthy"}
