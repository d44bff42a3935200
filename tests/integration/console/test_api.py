"""The console's HTTP API against a real organisation: six agent processes, real
Postgres and Redis, the console as the organisation's supervised child.

One organisation serves the whole module; each test leaves it as it found it
(healthy agents), so the order of the tests does not matter.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import anyio
import httpx

from echo.org.node.state import read_org
from tests.console_org import Console
from tests.helpers import ROLES, all_in, run_cli, wait_until


async def test_health_is_open_and_lists_six_healthy_agents(org: Console) -> None:
    async with org.client(token="") as anonymous:
        answer = await anonymous.get("/health")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert {a["role"] for a in body["agents"]} == set(ROLES)
    for a in body["agents"]:
        assert a["state"] == "healthy" and a["pid"] and {"role", "state", "pid"} <= set(a)
    assert "sekret" not in answer.text and "password" not in answer.text


async def test_agents_list_and_restart_one(org: Console) -> None:
    async with org.client() as c:
        listed = (await c.get("/api/v1/agents")).json()
        assert {a["role"]: a["state"] for a in listed["agents"]} == dict.fromkeys(ROLES, "healthy")
        before = {a["role"]: a["pid"] for a in listed["agents"]}
        restarted = await c.post("/api/v1/agents/chro/restart")
        assert restarted.status_code == 200, restarted.text
        assert restarted.json()["pid"] not in (None, before["chro"])
        unknown = await c.post("/api/v1/agents/nobody/restart")
        assert unknown.status_code == 400 and "nobody" in unknown.json()["error"]
    await wait_until(all_in(org.settings, "healthy"), timeout=60, interval=0.1)
    record = read_org(org.settings)
    assert record is not None and record.agents["chro"].pid != before["chro"]
    assert record.agents["cto"].pid == before["cto"]


async def test_messages_post_and_list_with_after_limit_role(org: Console) -> None:
    async with org.client() as c:
        first = await c.post("/api/v1/messages", json={"subject": "Q3 plan", "body": "move the API"})
        assert first.status_code == 201, first.text
        direct = await c.post("/api/v1/messages", json={"subject": "for the CTO", "from": "ceo", "to": "cto"})
        assert direct.status_code == 201, direct.text
        a, b = first.json()["db_id"], direct.json()["db_id"]
        assert b > a and direct.json()["channel"] == "messages:cto"

        after = (await c.get("/api/v1/messages", params={"after": a - 1, "limit": 10})).json()
        assert [m["id"] for m in after][:2] == [a, b]
        assert after[0]["subject"] == "Q3 plan" and after[0]["body"] == {"text": "move the API"}
        one = (await c.get("/api/v1/messages", params={"after": a - 1, "limit": 1})).json()
        assert [m["id"] for m in one] == [a]
        cto = (await c.get("/api/v1/messages", params={"after": a - 1, "role": "cto"})).json()
        assert b in [m["id"] for m in cto] and all("cto" in (m["to_role"], m["from_role"]) or
                                                    m["to_role"] == "all" for m in cto)

        for bad, why in [({"subject": ""}, "subject"), ({"subject": "x", "to": "nobody"}, "nobody"),
                         ({"body": "no subject"}, "subject"),
                         ({"subject": "x", "from": "intruder"}, "intruder")]:
            refused = await c.post("/api/v1/messages", json=bad)
            assert refused.status_code == 400, (bad, refused.text)
            assert why in refused.json()["error"]
        garbage = await c.post("/api/v1/messages", content=b"{not json",
                               headers={"content-type": "application/json"})
        assert garbage.status_code == 400 and garbage.json()["error"]
        assert (await c.get("/api/v1/messages", params={"limit": 0})).status_code == 400


async def test_tasks_submit_list_show_cancel_retry_with_the_right_statuses(org: Console) -> None:
    async with org.client() as c:
        made = await c.post("/api/v1/tasks", json={
            "description": "a program that is not there", "role": "cto", "type": "command", "priority": 5,
            "timeout": 30, "payload": {"argv": ["/nonexistent/echo-test-program"]}, "max_retries": 0})
        assert made.status_code == 201, made.text
        failing = made.json()["task_id"]

        async def status_of(task_id: int) -> str:
            return str((await c.get(f"/api/v1/tasks/{task_id}")).json()["status"])

        await wait_until(lambda: _is(status_of(failing), "failed"), timeout=60, interval=0.1)
        shown = (await c.get(f"/api/v1/tasks/{failing}")).json()
        assert [h["action"] for h in shown["history"]][:2] == ["task.enqueued", "task.claimed"]
        assert shown["history"][-1]["action"] == "task.failed"

        listed = (await c.get("/api/v1/tasks", params={"status": "failed", "role": "cto"})).json()
        assert failing in [t["task_id"] for t in listed]
        assert all(t["status"] == "failed" and t["assigned_role"] == "cto" for t in listed)
        assert (await c.get("/api/v1/tasks", params={"status": "bogus"})).status_code == 400

        assert (await c.post(f"/api/v1/tasks/{failing}/cancel")).status_code == 409
        retried = await c.post(f"/api/v1/tasks/{failing}/retry")
        assert retried.status_code == 200, retried.text
        await wait_until(lambda: _is(status_of(failing), "failed"), timeout=60, interval=0.1)
        history = [h["action"] for h in (await c.get(f"/api/v1/tasks/{failing}")).json()["history"]]
        assert "task.requeued" in history and history.count("task.failed") == 2

        later = await c.post("/api/v1/tasks", json={
            "description": "later", "role": "nobody_runs_this", "type": "noop"})
        assert later.status_code == 400  # an unknown role is refused before anything is written
        parked = await c.post("/api/v1/tasks", json={"description": "wait", "type": "noop", "role": "cto",
                                                     "payload": {"sleep": 30}})
        parked_id = parked.json()["task_id"]
        cancelled = await c.post(f"/api/v1/tasks/{parked_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert (await c.post(f"/api/v1/tasks/{parked_id}/cancel")).status_code == 409
        bad = await c.post(f"/api/v1/tasks/{parked_id}/retry", params={"anywhere": "maybe"})
        assert bad.status_code == 400, bad.text
        again = await c.post(f"/api/v1/tasks/{parked_id}/retry", params={"anywhere": "true"})
        assert again.status_code == 200, again.text
        assert (await c.post(f"/api/v1/tasks/{parked_id}/cancel")).status_code == 200
        assert (await c.post("/api/v1/tasks/999999999/retry")).status_code == 404
        assert (await c.get("/api/v1/tasks/999999999")).json()["error"].startswith("no task 999999999")
        assert (await c.post("/api/v1/tasks", json={"description": ""})).status_code == 400


async def _is(value: Any, expected: str) -> bool:
    return bool(await value == expected)


async def test_workflow_start_list_show_and_decisions(org: Console) -> None:
    async with org.client() as c:
        made = await c.post("/api/v1/workflows", json={
            "subject": "Move the API database to the new cloud platform", "body": "budget to discuss",
            "rounds": 1})
        assert made.status_code == 201, made.text
        wf = made.json()["workflow_id"]
        assert set(made.json()["roles"]) == set(ROLES)

        async def done() -> bool:
            return bool((await c.get(f"/api/v1/workflows/{wf}")).json()["workflow"]["phase"] == "done")

        await wait_until(done, timeout=120, interval=0.2)
        shown = (await c.get(f"/api/v1/workflows/{wf.removeprefix('wf-')}")).json()
        assert {p["role"] for p in shown["participants"]} == set(ROLES)
        assert all(p["reason"] for p in shown["participants"])
        assert shown["decision"]["outcome"] in ("approved", "rejected")
        assert any(m["kind"] == "vote" for m in shown["messages"])
        assert shown["timeline"][0]["action"] == "workflow.started"
        assert wf in [w["id"] for w in (await c.get("/api/v1/workflows")).json()]
        assert wf in [d["workflow_id"] for d in (await c.get("/api/v1/decisions")).json()]

        missing = await c.get("/api/v1/workflows/wf-999999")
        assert missing.status_code == 404 and "wf-999999" in missing.json()["error"]
        bad = await c.post("/api/v1/workflows", json={"subject": "x", "quorum": "everyone"})
        assert bad.status_code == 400


async def test_openapi_lists_every_area(org: Console) -> None:
    async with org.client() as c:
        spec = (await c.get("/api/v1/openapi.json")).json()
    paths = set(spec["paths"])
    for path in ["/api/v1/agents", "/api/v1/agents/{role}/restart", "/api/v1/messages", "/api/v1/workflows",
                 "/api/v1/workflows/{workflow_id}", "/api/v1/decisions", "/api/v1/tasks",
                 "/api/v1/tasks/{task_id}", "/api/v1/tasks/{task_id}/cancel", "/api/v1/tasks/{task_id}/retry",
                 "/api/v1/events", "/api/v1/spend"]:
        assert path in paths, path


async def test_every_mutating_endpoint_refuses_a_missing_or_wrong_token(org: Console) -> None:
    async with org.client() as c:
        spec = (await c.get("/api/v1/openapi.json")).json()
        before = (await c.get("/api/v1/summary")).json()
        tasks_before = await c.get("/api/v1/tasks", params={"limit": 1000})
    mutating = [(method.upper(), path.replace("{role}", "cto").replace("{task_id}", "1"))
                for path, methods in spec["paths"].items() for method in methods
                if method in ("post", "put", "patch", "delete")]
    assert len(mutating) >= 6, mutating
    bodies = {"/api/v1/messages": {"subject": "forged"}, "/api/v1/tasks": {"description": "forged"},
              "/api/v1/workflows": {"subject": "forged"}}
    for token in ("", "wrong-" + org.token[:8], org.token + "x"):
        async with org.client(token=token) as c:
            for method, path in mutating:
                answer = await c.request(method, path, json=bodies.get(path, {}))
                assert answer.status_code == 401, (token, method, path, answer.text)
                assert "token" in answer.json()["error"] and org.token not in answer.text
            for path in ("/api/v1/agents", "/api/v1/events", "/api/v1/openapi.json", "/"):
                assert (await c.get(path)).status_code == 401, path
            # a token in the query string is no way around it either
            sneaky = await c.post("/api/v1/messages", params={"token": token}, json={"subject": "x"})
            assert sneaky.status_code == 401
    async with org.client() as c:
        assert (await c.get("/api/v1/summary")).json()["messages"] == before["messages"]
        assert (await c.get("/api/v1/tasks", params={"limit": 1000})).json() == tasks_before.json()


async def test_token_file_is_private_and_query_token_sets_a_strict_cookie(org: Console) -> None:
    from echo.console.auth import token_path

    assert token_path(org.settings).stat().st_mode & 0o777 == 0o600
    async with httpx.AsyncClient(base_url=org.url, follow_redirects=False) as browser:
        first = await browser.get("/", params={"token": org.token, "view": "tasks"})
        assert first.status_code == 303 and first.headers["location"] == "/?view=tasks"
        cookie = first.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = await browser.get("/")  # the cookie from now on
        assert page.status_code == 200 and "<title>ECHO console</title>" in page.text
        assert org.token not in page.text
        assert (await browser.get("/static/app.js")).status_code == 200
        assert (await browser.get("/api/v1/agents")).status_code == 200


async def test_metrics_open_on_loopback_with_echo_names(org: Console) -> None:
    async with org.client(token="") as c:
        await c.get("/health")
        text = (await c.get("/metrics")).text
    for name in ("echo_agent_state", "echo_agent_restarts_total", "echo_inbox_lag", "echo_tasks",
                 "echo_messages_published_total", "echo_task_claim_latency_seconds_bucket",
                 "echo_task_duration_seconds_bucket", "echo_console_clients", "echo_spend_usd_total",
                 "echo_database_up"):
        assert name in text, name
    assert 'echo_agent_state{role="cto",state="healthy"} 1.0' in text
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert all(line.startswith("echo_") for line in samples), samples[:5]


async def test_sse_fans_out_from_one_listen_connection_and_resumes_by_last_event_id(org: Console) -> None:
    clients = 20
    got: dict[int, list[dict[str, Any]]] = {i: [] for i in range(clients)}
    ready = [anyio.Event() for _ in range(clients)]

    async def follow(i: int, c: httpx.AsyncClient, want: int) -> None:
        async with c.stream("GET", "/api/v1/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            ready[i].set()
            async for data in _messages(response):
                got[i].append(data)
                if sum(1 for d in got[i] if d.get("action") == "message.published") >= want:
                    return

    async with org.client() as c:
        async with anyio.create_task_group() as tg:
            for i in range(clients):
                tg.start_soon(follow, i, c, 3)
            for event in ready:
                await event.wait()
            async with org.client(token="") as probe:
                metrics = (await probe.get("/metrics")).text
            assert f"echo_console_clients {clients}.0" in metrics
            ids = [(await c.post("/api/v1/messages", json={"subject": f"fan-out {n}"})).json()["db_id"]
                   for n in range(3)]
        for i in range(clients):
            published = [d for d in got[i] if d.get("action") == "message.published"]
            assert [int(d["subject_id"]) for d in published] == ids, i

        held = await _console_connections(org)
        # a pool of at most 4, ONE LISTEN, and the status poll's short probe of other machines'
        # heartbeats: whatever the number of clients
        assert held <= 6, held

        # Resume: the id of the first message's frame, then two more while away.
        frames: list[tuple[str | None, dict[str, Any]]] = []
        async with c.stream("GET", "/api/v1/events") as response:
            sent = (await c.post("/api/v1/messages", json={"subject": "before the break"})).json()["db_id"]
            async for event_id, data in _frames(response):
                frames.append((event_id, data))
                if data.get("subject_id") == str(sent):
                    break
        last_id = frames[-1][0]
        assert last_id is not None
        away = [(await c.post("/api/v1/messages", json={"subject": f"while away {n}"})).json()["db_id"]
                for n in range(2)]
        seen: list[int] = []
        async with c.stream("GET", "/api/v1/events", headers={"Last-Event-ID": last_id}) as response:
            async for _event_id, data in _frames(response):
                if data.get("action") == "message.published":
                    seen.append(int(data["subject_id"]))
                if away[-1] in seen:
                    break
        assert seen == away  # nothing lost, nothing repeated
        bad = await c.get("/api/v1/events", headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 400


async def _frames(response: httpx.Response) -> Any:
    """(id, data) of each SSE frame that carries an event of the feed."""
    event_id: str | None = None
    data: str | None = None
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data is not None:
            parsed = json.loads(data)
            if "seq" in parsed:
                yield event_id, parsed
            event_id, data = None, None


async def _messages(response: httpx.Response) -> Any:
    async for _event_id, data in _frames(response):
        yield data


async def _console_connections(org: Console) -> int:
    from echo.db import connection

    async with connection(org.settings.database) as conn:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            f"echo-console:{org.settings.namespace}"))


async def test_a_killed_console_is_restarted_and_the_agents_never_notice(org: Console) -> None:
    record = read_org(org.settings)
    assert record is not None and record.console is not None and record.console.pid
    agents = {r: record.agents[r].pid for r in ROLES}
    old = record.console.pid
    os.kill(old, signal.SIGKILL)

    def back() -> bool:
        rec = read_org(org.settings)
        return bool(rec and rec.console and rec.console.pid != old and rec.console.state == "running"
                    and rec.console_url)

    await wait_until(back, timeout=90, interval=0.1)
    record = read_org(org.settings)
    assert record is not None and record.state == "running" and record.console is not None
    assert record.console.restarts >= 1
    assert {r: record.agents[r].pid for r in ROLES} == agents
    org.url = record.console_url or org.url  # port 0: a new free port
    async with org.client() as c:
        assert (await c.get("/api/v1/agents")).status_code == 200
    shown = await run_cli(org.settings, "status")
    assert f"console: {record.console_url}, restarts {record.console.restarts}" in shown.stdout, shown.stdout
    logs = await run_cli(org.settings, "logs", "console", "-n", "50")
    assert logs.returncode == 0 and "ECHO-READY console" in logs.stdout, logs.stderr


async def test_skipped_tasks_are_counted_and_listed_apart_from_failed(org: Console) -> None:
    """One vocabulary: what the task list shows (`skipped`: Claude was unavailable) is
    what the summary, the filter and the metrics count."""
    from echo import db as dbmod
    from echo.org.workflow import SKIPPED

    async with org.client() as c:
        ids = []
        for _ in range(2):
            made = await c.post("/api/v1/tasks", json={
                "description": "run a program that is not installed", "role": "cto", "type": "command",
                "payload": {"argv": ["/nonexistent/echo-api-test"]}, "max_retries": 0})
            ids.append(made.json()["task_id"])
        failed, skipped = ids

        async def both_failed() -> bool:
            rows = (await c.get("/api/v1/tasks", params={"limit": 1000})).json()
            return {t["task_id"] for t in rows if t["status"] == "failed"} >= set(ids)

        await wait_until(both_failed, timeout=60, interval=0.2)
        database = await dbmod.Database.open(org.settings.database, min_size=1, max_size=1)
        try:
            async with database.acquire() as conn:  # what the workflow's agent leaves without Claude
                await conn.execute("UPDATE agent_tasks SET error = $2 WHERE task_id = $1",
                                   skipped, f"{SKIPPED} (ClaudeNotInstalled: no claude)")
                in_db = {r["kind"]: r["n"] for r in await conn.fetch(
                    "SELECT CASE WHEN error LIKE 'skipped: claude unavailable%' THEN 'skipped' "
                    "ELSE status END AS kind, count(*) AS n FROM agent_tasks GROUP BY 1")}
        finally:
            await database.close()
        summary = (await c.get("/api/v1/summary")).json()["tasks"]
        assert summary["skipped"] == in_db["skipped"] >= 1
        assert summary["failed"] == in_db["failed"] >= 1
        async def listed(status: str) -> list[int]:
            return [t["task_id"] for t in (await c.get("/api/v1/tasks", params={"status": status})).json()]

        as_skipped, as_failed = await listed("skipped"), await listed("failed")
        assert skipped in as_skipped and skipped not in as_failed
        assert failed in as_failed and failed not in as_skipped
        bad = await c.get("/api/v1/tasks", params={"status": "lost"})
        assert bad.status_code == 400 and "skipped" in bad.json()["error"]
    async with org.client(token="") as anonymous:
        text = (await anonymous.get("/metrics")).text
    assert f'echo_tasks{{status="skipped"}} {float(summary["skipped"])}' in text
    assert f'echo_tasks{{status="failed"}} {float(summary["failed"])}' in text
