"""The one API for users of an organisation: what the CLI and the console call.

In the spirit of procrastinate's `App`: one object, built from `Settings`, that owns
its connections and offers the operations people perform, with typed results.

    async with Client(settings) as c:
        sent = await c.broadcast("Q3 plan", "Move the API", sender="ceo")
        sent.db_id, sent.receivers
        task = await c.submit_task("Summarise the plan", role="cto")
        detail = await c.workflow("wf-1")            # WorkflowDetail
        status = await c.status()                    # OrgStatus, per agent

Its operations are grouped by area, a class each, and `Client` is their sum:
client_messages (send, list, ask, inbox), client_tasks, client_approvals,
client_governor (budgets and spend), client_workflows; what is left here is the
organisation's own (`status`, `restart_agent`). client_base holds what they share:
the pool, opened on first use (so `status` works with Postgres down), and the
publisher, opened on the first send, both closed on exit. It holds no SQL: queries
live in shared/sql/queries/*.sql behind the stores (`MessageStore`, `TaskQueue`,
`WorkflowStore`). Every operation on a namespace that has not been migrated says so
in one line (`MigrationError`), whichever table it touches first.
Input is checked before anything is written; bad input raises a `UsageError` leaf.
"""

from __future__ import annotations

from echo.org.client_approvals import ApprovalOps
from echo.org.client_governor import GovernorOps
from echo.org.client_messages import MessageOps
from echo.org.client_tasks import TaskOps
from echo.org.client_workflows import WorkflowOps
from echo.org.node import control
from echo.org.roles import load_role
from echo.org.status import OrgStatus, collect_status


class Client(MessageOps, TaskOps, ApprovalOps, GovernorOps, WorkflowOps):
    """The operations users perform on one organisation (`settings.namespace`)."""

    async def status(self, *, remote: bool = True) -> OrgStatus:
        """Each agent: role, pid, state, uptime, restarts, heartbeat age, inbox lag,
        running tasks, degraded reason. From the state directory (this machine's
        organisation) and, with `remote`, Postgres (agents on other machines)."""
        return await collect_status(self.settings, remote=remote)

    async def restart_agent(self, role: str) -> int | None:
        """Restart one agent of the running organisation (a person's restart, not a
        crash: not counted against the restart intensity). Returns its new pid."""
        load_role(self.settings.agents_dir, role)
        answer = await control.request(self.settings, {"command": "restart", "role": role})
        pid = answer.get("pid")
        return int(pid) if pid else None
