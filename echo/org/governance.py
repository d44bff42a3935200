"""The governor as the organisation sees it: each role's account and budget from its
file, the summary `status` and `echoctl claude` show, and why a pending task waits.

The client (echo.org.client) calls these; the commands only render what it returns.
The governor itself (ledger, budgets, pauses, the claim gate) is echo.work.governor.
"""

from __future__ import annotations

from typing import Any

import anyio

from echo.config import Settings
from echo.db import Database, embedded_server
from echo.org.roles import load_roles
from echo.work.governor import Governor
from echo.work.workers import Serving, WorkerRegistry, unserved


def governor_for(s: Settings, database: Database) -> Governor:
    """The organisation's governor as configured: each role's account from its file."""
    roles = load_roles(s.agents_dir)
    return Governor(s.governor, database, role_accounts={
        name: r.claude.account for name, r in roles.items() if r.claude.account})


async def synced_governor(s: Settings, database: Database, *, sync: bool = True) -> Governor:
    """The governor with the configured defaults written (what the agents do at start);
    an operator's `echoctl budget set` still wins."""
    governor = governor_for(s, database)
    if sync:
        await governor.sync({name: r.budget.daily_usd for name, r in load_roles(s.agents_dir).items()})
    return governor


async def governor_summary(s: Settings, roles: list[str]) -> dict[str, Any] | None:
    """What `status` and `echoctl claude` say about the governor: the pauses in force
    and, per role, why its Claude runs wait. Database errors reach the caller; None
    when the embedded database is not running (looking must not start it)."""
    if not s.database_url and embedded_server(s.database).running_pid() is None:
        return None
    database = await Database.open(s.database.model_copy(update={"connect_timeout": 1.5}),
                                   min_size=0, max_size=1)
    try:
        with anyio.fail_after(3):
            governor = governor_for(s, database)
            view = await governor.view()
            unclaimed = await unclaimed_tasks(database)
    finally:
        await database.close()
    held = {role: why for role in roles
            if (why := view.blocker(role, None, governor.gate.account_of(role)))}
    return {"paused": [{"account": p.account, "text": p.describe(view.timezone)}
                       for p in view.pauses.values()],
            "waiting": held, "billing": s.claude_billing, "unclaimed": unclaimed}


async def unclaimed_tasks(database: Database) -> list[dict[str, Any]]:
    """The pending tasks no live worker or agent takes, by role and type, with the
    reason `tasks list` gives each (what `status` shows)."""
    serving = await live_claimers(database)
    out = []
    for role, task_type, at, n in await WorkerRegistry(database).pending_kinds():
        why = unserved({"status": "pending", "assigned_role": role, "task_type": task_type,
                        "workspace_at": at}, serving)
        if why:
            out.append({"role": role, "task_type": task_type, "count": n, "text": why})
    return out


async def annotate_waiting(s: Settings, database: Database,
                           rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add `waiting` to each pending task that cannot start now, and say why: the
    governor holds it up (`waiting: budget — cto spent $6.30 of $5.00 today`), or no
    live pool takes it (`waiting: no worker for role-less tasks; run `echoctl worker``,
    echo.work.workers)."""
    if any(r.get("status") == "pending" for r in rows):
        governor = governor_for(s, database)
        view = await governor.view()
        serving = await live_claimers(database)
        for row in rows:
            row["waiting"] = view.reason(row, governor.gate) or unserved(row, serving)
    return rows


async def live_claimers(database: Database) -> list[Serving]:
    """Who claims tasks now: every running pool (the agents' and `echoctl worker`s)."""
    return await WorkerRegistry(database).serving()
