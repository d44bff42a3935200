"""What every transport of the `echo` MCP server must do, checked through the real
`mcp` client library: the stdio tests (a real `echoctl mcp` subprocess) and the
console's HTTP tests call the same checks, so both transports are held to one
standard. Each check asserts the effect in the store, read with `Client` beside
the server, not only what the server says it did."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import mcp
from mcp import StdioServerParameters

from echo import db as dbmod
from echo.bus import MessageStore
from echo.config import Settings
from echo.org.agent.answers import FALLBACK_MARK
from echo.org.agent.asks import Answerer
from echo.org.client import Client
from echo.org.roles import load_role, load_roles
from echo.org.workflow import WorkflowStore
from tests.helpers import cli_env, wait_until

#: Every tool of the operator's server.
TOOLS = {"broadcast", "send", "ask", "messages", "thread", "submit_task", "task",
         "start_workflow", "workflow", "decisions", "status", "spend",
         "approvals", "approve", "deny"}


@contextlib.asynccontextmanager
async def stdio(s: Settings, *args: str) -> AsyncIterator[mcp.Client]:
    """An MCP session with a real `python -m echo mcp ARGS` of `s`'s organisation: the
    command line a Claude run's `--mcp-config` carries."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "echo", "mcp", *args],
                                   env=cli_env(s))
    async with mcp.Client(params) as session:
        yield session


async def ok(session: mcp.Client, tool: str, **arguments: Any) -> Any:
    """The JSON a tool call returned; fails the test on an error result."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content
    [content] = result.content
    assert isinstance(content, mcp.types.TextContent)
    return json.loads(content.text)


async def refused(session: mcp.Client, tool: str, **arguments: Any) -> str:
    """The one line of a tool error result."""
    result = await session.call_tool(tool, arguments)
    assert result.is_error, result.content
    [content] = result.content
    assert isinstance(content, mcp.types.TextContent)
    assert content.text and "\n" not in content.text and "Traceback" not in content.text
    return content.text


async def resource(session: mcp.Client, uri: str) -> Any:
    """The JSON of one resource."""
    [content] = (await session.read_resource(uri)).contents
    assert isinstance(content, mcp.types.TextResourceContents) and content.mime_type == "application/json"
    return json.loads(content.text)


async def heartbeat(s: Settings, *roles: str) -> None:
    """A fresh heartbeat of `roles`, as their running agents write: a workflow asks the
    agents that are up."""
    async with dbmod.connection(s.database) as conn:
        for role in roles:
            await conn.execute(
                "INSERT INTO agent_health (role, host, pid, state, started_at) VALUES "
                "($1, 'elsewhere', 4242, 'healthy', now()) ON CONFLICT (role) DO UPDATE "
                "SET last_heartbeat = now(), state = 'healthy'", role)


async def decided_workflow(s: Settings, subject: str) -> str:
    """A workflow the CEO decided (written as its agent would), for `decisions`."""
    db = await dbmod.Database.open(s.database, min_size=0, max_size=1)
    try:
        store = WorkflowStore(db)
        workflow_id = await store.create(subject=subject, body="", started_by="operator",
                                         roles=["ceo"], rounds=1, quorum="majority",
                                         decider_timeout=30, phase_timeout=120)
        await store.decide(workflow_id, actor="ceo", outcome="approved", consensus="approved",
                           summary=f"go ahead with {subject}", source="fallback",
                           fallback_reason=None, tasks=[])
    finally:
        await db.close()
    return workflow_id


async def lists_tools_and_resources(session: mcp.Client, s: Settings) -> None:
    tools = (await session.list_tools()).tools
    assert {t.name for t in tools} == TOOLS
    assert all(t.description for t in tools)
    assert {t.name for t in tools if t.annotations and t.annotations.read_only_hint} == TOOLS - {
        "broadcast", "send", "ask", "submit_task", "start_workflow", "approve", "deny"}
    send = next(t for t in tools if t.name == "send")
    assert set(send.input_schema["required"]) == {"to", "subject"}
    uris = {str(r.uri) for r in (await session.list_resources()).resources}
    roles = load_roles(s.agents_dir)
    assert uris == {"echo://roles", "echo://decisions", *(f"echo://roles/{n}" for n in roles)}
    listed = await resource(session, "echo://roles")
    assert [r["name"] for r in listed] == list(roles)  # in start order
    cto = await resource(session, "echo://roles/cto")
    assert (cto["name"], cto["title"], cto["responsibilities"]) == (
        "cto", roles["cto"].title, roles["cto"].responsibilities)
    assert cto["prompt"] and roles["cto"].system_prompt.split()[0] in cto["prompt"]


async def every_tool_acts(session: mcp.Client, s: Settings, *, sender: str = "operator") -> None:
    """Call every tool with valid input and find its effect in the store."""
    sent = await ok(session, "broadcast", subject="Quarterly plan", body="all of you")
    direct = await ok(session, "send", to="cto", subject="Just you", body="a word")
    async with Client(s) as client:
        stored = {m.id: m for m in await client.messages(role="cto", limit=100)}
        assert (stored[sent["db_id"]].from_role, stored[sent["db_id"]].to_role) == (sender, "all")
        mine = stored[direct["db_id"]]
        assert (mine.from_role, mine.to_role, mine.kind, mine.subject) == (
            sender, "cto", "direct", "Just you")
        assert mine.body == {"text": "a word"}

        listed = await ok(session, "messages", role="cto", after=sent["db_id"] - 1)
        assert [m["id"] for m in listed] == [sent["db_id"], direct["db_id"]]
        assert [m["id"] for m in await ok(session, "messages", limit=1)] == [direct["db_id"]]

        submitted = await ok(session, "submit_task", description="Summarise the plan", role="cto")
        row = (await client.task(submitted["task_id"])).task
        assert (row["task_description"], row["assigned_role"], row["status"]) == (
            "Summarise the plan", "cto", "pending")
        shown = await ok(session, "task", id=submitted["task_id"])
        assert shown["task"]["task_id"] == submitted["task_id"] and shown["history"]

        await heartbeat(s, "ceo", "cto")
        started = await ok(session, "start_workflow", subject="Adopt MCP", body="for every run")
        detail = await client.workflow(started["id"])
        assert (detail.workflow.subject, detail.workflow.started_by) == ("Adopt MCP", sender)
        shown = await ok(session, "workflow", id=started["id"])
        assert shown["workflow"]["id"] == started["id"] and shown["workflow"]["body"] == "for every run"
        thread = await ok(session, "thread", workflow_id=started["id"].removeprefix("wf-"))
        assert [m["id"] for m in thread] == [m.id for m in (await client.workflow(started["id"])).messages]
        assert thread and thread[0]["from_role"] == sender

        decided = await decided_workflow(s, "Move the API")
        decisions = await ok(session, "decisions")
        assert (decisions[0]["workflow_id"], decisions[0]["summary"]) == (
            decided, "go ahead with Move the API")
        assert await resource(session, "echo://decisions") == decisions

        await asks_and_gets_the_answer(session, s, sender=sender)
        if sender == "operator":
            await decides_approvals(session, client)
        else:
            await requests_a_budget(session, client, sender)

        status = await ok(session, "status")
        assert {"ceo", "cto"} <= {a["role"] for a in status["agents"]}
        assert {a["role"] for a in status["agents"]} == {a.role for a in (await client.status()).agents}
        spend = await ok(session, "spend")
        report = (await client.spend_report()).model_dump(mode="json")
        assert (spend["day"], spend["roles"], spend["org"]) == (report["day"], report["roles"], report["org"])
        assert spend["roles"]  # every role, with its budget


async def asks_and_gets_the_answer(session: mcp.Client, s: Settings, *, sender: str) -> None:
    """`ask` returns the other role's answer: the senior architect's Answerer (here, in
    this process, without Claude: its fallback answers) is started once the question
    is stored, as an agent that was down would find it at its first look."""
    await heartbeat(s, "senior_architect")
    got: list[Any] = []
    database = await dbmod.Database.open(s.database, min_size=0, max_size=2)
    try:
        await answered_after_asking(session, s, database, got)
    finally:
        await database.close()
    answer = got[0]
    assert (answer["role"], answer["source"]) == ("senior_architect", "fallback")
    assert answer["answer"].startswith(FALLBACK_MARK)
    async with Client(s) as client:
        asked = {m.id: m for m in await client.messages(role=sender, limit=100)}
    assert (asked[answer["question_id"]].from_role, asked[answer["question_id"]].kind) == (
        sender, "question")
    assert (asked[answer["answer_id"]].to_role, asked[answer["answer_id"]].kind) == (sender, "answer")


async def role_budget(client: Client, role: str) -> float | None:
    rows = (await client.budgets())["budgets"]
    return next((r["daily_usd"] for r in rows if (r["scope"], r["key"]) == ("role", role)), None)


async def decides_approvals(session: mcp.Client, client: Client) -> None:
    """The operator's server lists pending requests and decides them, audited as `mcp:`."""
    raise_it = await client.request_budget("cto", 9.0, "a bigger migration")
    refuse_it = await client.request_budget("chro", 99.0, "a hiring spree")
    pending = await ok(session, "approvals", state="pending")
    assert {raise_it.id, refuse_it.id} <= {a["id"] for a in pending}
    approved = await ok(session, "approve", id=raise_it.id)
    assert approved["decided_by"].startswith("mcp") and approved["state"] in ("approved", "used")
    assert await role_budget(client, "cto") == 9.0  # an approved budget request applies at once
    denied = await ok(session, "deny", id=refuse_it.id, reason="not this quarter")
    assert (denied["state"], denied["reason"]) == ("denied", "not this quarter")
    assert await role_budget(client, "chro") != 99.0
    assert "already" in await refused(session, "approve", id=refuse_it.id)
    assert "no approval request 999999" in await refused(session, "deny", id=999_999, reason="x")
    detail = await client.approval(raise_it.id)
    assert any("mcp" in str(h.model_dump()) for h in detail.history)  # who, in the audit trail


async def requests_a_budget(session: mcp.Client, client: Client, role: str) -> None:
    """A role's server may only ask for a budget: the request waits for the operator."""
    asked = await ok(session, "request_budget", daily_usd=50, reason="the migration needs more")
    [row] = [a for a in await client.approvals(state="pending") if a.id == asked["id"]]
    assert (row.kind, row.role, row.input["daily_usd"]) == ("budget", role, 50.0)
    assert await role_budget(client, role) != 50.0


async def answered_after_asking(session: mcp.Client, s: Settings, database: dbmod.Database,
                                got: list[Any]) -> None:
    answered = anyio.Event()
    async with anyio.create_task_group() as tg:
        async def asking() -> None:
            got.append(await ok(session, "ask", role="senior_architect",
                                question="Which queue should the API use?", timeout=30))
            answered.set()

        tg.start_soon(asking)
        store = MessageStore(database)
        await wait_until(lambda: store.open_questions("senior_architect", within=60),
                         timeout=30, interval=0.05)
        answerer = Answerer(s, database, load_role(s.agents_dir, "senior_architect"))
        await tg.start(answerer.run)
        with anyio.fail_after(30):
            await answered.wait()
        tg.cancel_scope.cancel()


async def bad_input_is_one_error_result(session: mcp.Client, s: Settings) -> None:
    """Each kind of bad input is refused in one line, nothing is stored, and the server
    answers the next call."""
    async with Client(s) as client:
        before = await client.latest_message_id()
        tasks = len(await client.tasks(limit=1000))
    assert "unknown role 'janitor'" in await refused(session, "send", to="janitor", subject="hi")
    assert "subject is empty" in await refused(session, "broadcast", subject="   ")
    assert "NUL" in await refused(session, "broadcast", subject="a\x00b")
    assert "NUL" in await refused(session, "submit_task", description="x\x00")
    assert "bad argument limit" in await refused(session, "messages", limit=0)
    assert "bad argument subject" in await refused(session, "send", to="cto")
    assert "bad argument id" in await refused(session, "task", id="twelve")
    assert "out of range" in await refused(session, "task", id=0)
    assert "no task 999999" in await refused(session, "task", id=999_999)
    assert "not a workflow id" in await refused(session, "workflow", id="wf 1")
    assert "use the broadcast tool" in await refused(session, "send", to="all", subject="x")
    assert "unknown role" in await refused(session, "submit_task", description="x", role="janitor")
    assert "the question is empty" in await refused(session, "ask", role="cto", question=" ")
    assert "bad argument timeout" in await refused(session, "ask", role="cto", question="?",
                                                   timeout=0.5)
    assert "Unknown tool" in await refused(session, "request_budget", daily_usd=1, reason="x")
    assert await ok(session, "messages", limit=1) is not None  # still answering
    async with Client(s) as client:
        assert await client.latest_message_id() == before
        assert len(await client.tasks(limit=1000)) == tasks
