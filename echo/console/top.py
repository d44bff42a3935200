"""`echoctl top`: the dashboard's live view in a terminal (rich Live).

For a machine without a browser: the organisation tree, the latest messages, the
task queue and the open workflows, redrawn every `interval` seconds from the same
data seam the console uses. When the database is away it says so and keeps trying.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from echo.config import Settings
from echo.console.data import ConsoleData
from echo.errors import EchoError
from echo.org.client import Client

COLOURS = {"healthy": "green", "degraded": "yellow", "unresponsive": "red", "down": "red"}


def _age(iso: str | None) -> str:
    if not iso:
        return "-"
    return f"{(datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds():.1f}s"


def render(snap: dict[str, Any]) -> Group:
    """One frame from a snapshot (see `snapshot`)."""
    org = snap["status"]["organisation"]
    agents = Table("role", "state", "pid", "node", "restarts", "heartbeat", "inbox lag", "tasks",
                   title=f"organisation: {org['state']} (pid {org['pid'] or '-'})", expand=True)
    for a in snap["status"]["agents"]:
        colour = COLOURS.get(a["state"], "white")
        agents.add_row(a["role"], f"[{colour}]{a['state']}[/]", str(a.get("pid") or "-"),
                       str(a.get("host") or "-"), str(a.get("restarts", 0)), _age(a.get("last_heartbeat")),
                       str(a.get("inbox_lag") if a.get("inbox_lag") is not None else "-"),
                       str(a.get("running_tasks") if a.get("running_tasks") is not None else "-"))
    messages = Table("id", "from → to", "subject", title="latest messages", expand=True)
    for m in snap["messages"]:
        messages.add_row(str(m["id"]), f"{m['from_role']} → {m['to_role']}", escape(m["subject"])[:80])
    counts = "  ".join(f"{k} {v}" for k, v in snap["counts"].items())
    tasks = Table("id", "status", "role", "description", title=f"tasks: {counts}", expand=True)
    for t in snap["tasks"]:
        tasks.add_row(str(t["task_id"]), t.get("outcome") or t["status"], t["assigned_role"] or "-",
                      escape(t["task_description"])[:60])
    flows = Table("id", "phase", "subject", "consensus", title="workflows", expand=True)
    for w in snap["workflows"]:
        flows.add_row(w["id"], w["phase"], escape(w["subject"])[:60], w["consensus"] or "-")
    parts: list[Any] = [agents, messages, tasks, flows]
    if snap.get("error"):
        parts.insert(0, Panel(f"[red]{escape(snap['error'])}[/]", title="database"))
    return Group(*parts)


async def snapshot(data: ConsoleData) -> dict[str, Any]:
    snap: dict[str, Any] = {"status": await data.status(), "messages": [], "tasks": [], "workflows": [],
                            "counts": {}}
    try:
        snap["messages"] = list(reversed(await data.list_messages(after=None, limit=8, role=None)))
        snap["tasks"] = await data.list_tasks(status=None, role=None, limit=8)
        snap["counts"] = await data.task_counts()
        snap["workflows"] = await data.list_workflows(5)
    except EchoError as exc:
        snap["error"] = str(exc)
    return snap


async def watch(settings: Settings, *, interval: float = 1.0, once: bool = False,
                out: Console | None = None) -> None:
    """Redraw until Ctrl-C (or print one frame with `once`)."""
    out = out or Console()
    async with Client(settings) as client:
        data = ConsoleData(settings, client)
        if once:
            out.print(render(await snapshot(data)))
            return
        with Live(render(await snapshot(data)), console=out, refresh_per_second=4, screen=False) as live:
            while True:
                await anyio.sleep(interval)
                live.update(render(await snapshot(data)))
