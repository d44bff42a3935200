"""Who serves the queue now, and why a pending task nobody can claim waits.

A task is claimed only by a worker that serves its type and its role: an agent's pool
claims its own role's tasks (every type); a standalone worker (`echoctl worker`) claims
the roles it was given, or with no `--roles` every role and the tasks without one
(`agent_tasks_claimable`, 010). So a task without a role, with no standalone worker
running, is never claimed. Before, it stayed `pending` with no word about it.

Each running pool (an agent's, a standalone worker's) keeps a row in `task_workers`
(020) while it runs (`WorkerRegistry.keep`, started by `ExecutorPool.run`). `unserved` turns
that picture into the line `tasks list/show`, `status` and the console show beside the
governor's reasons (echo.org.governance). The rows are a hint for people, never a lock:
a killed worker's row goes stale after `FRESH_WITHIN` and stops counting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from echo.db import Database, load_queries
from echo.errors import EchoError
from echo.runtime.ticks import until_tick

__all__ = ["BEAT_INTERVAL", "FRESH_WITHIN", "Serving", "WorkerRegistry", "unserved"]

#: How often a pool renews its row, and how old a row may be and count.
BEAT_INTERVAL = 5.0
FRESH_WITHIN = 3 * BEAT_INTERVAL

_Q = load_queries("workers")


@dataclass(frozen=True)
class Serving:
    """One live pool: `roles` None serves every role and the tasks without one; `place`
    is where it keeps worktrees (`workspace_place`)."""

    worker: str
    roles: tuple[str, ...] | None
    task_types: tuple[str, ...]
    place: str | None = None

    def takes(self, task_type: str, role: str | None, at: str | None = None) -> bool:
        """Whether it claims such a task (pinned to the place `at`, if not None)."""
        return (task_type in self.task_types
                and (self.roles is None or (role is not None and role in self.roles))
                and (at is None or at == self.place))


def unserved(row: Mapping[str, Any], serving: Sequence[Serving]) -> str | None:
    """`waiting: ...` for a pending task row no live claimer takes; None otherwise."""
    if row.get("status") != "pending":
        return None
    task_type, role = str(row.get("task_type") or ""), row.get("assigned_role")
    at = row.get("workspace_at")
    if any(s.takes(task_type, role, at) for s in serving):
        return None
    if at is not None and any(s.takes(task_type, role) for s in serving):
        task = f" {row['task_id']}" if row.get("task_id") is not None else " ID"
        return (f"waiting: its worktree is at {at} (the repository is not pushed), where no "
                f"worker runs; start one there, or `echoctl tasks retry{task} --anywhere` to "
                "start it over from the base on any machine")
    if role is None:
        if any(s.roles is None for s in serving):  # such a worker runs, not this type
            return (f"waiting: no worker runs {task_type} tasks; "
                    f"run `echoctl worker --executor {task_type}`")
        return "waiting: no worker for role-less tasks; run `echoctl worker`"
    return f"waiting: the {role} agent is not running; run `echoctl up`"


class WorkerRegistry:
    """The `task_workers` rows: a standalone worker's presence, and every live claimer."""

    def __init__(self, database: Database) -> None:
        self.db = database

    async def register(self, worker: str, roles: Sequence[str] | None,
                       task_types: Sequence[str], place: str | None = None) -> None:
        async with self.db.acquire() as conn:
            await conn.execute(_Q["register"], worker,
                               None if roles is None else list(roles), sorted(task_types),
                               place)

    async def forget(self, worker: str) -> None:
        async with self.db.acquire() as conn:
            await conn.execute(_Q["forget"], worker)

    async def keep(self, worker: str, roles: Sequence[str] | None,
                   task_types: Sequence[str], *, place: str | None = None,
                   halted: Callable[[], bool] = lambda: False) -> None:
        """Keep `worker`'s row fresh until cancelled, then delete it. An outage only
        skips beats: the row is a hint, and the worker goes on without it. A pool that
        was halted (its lease ending) writes nothing more: its row just goes stale."""
        try:
            while True:
                with contextlib.suppress(EchoError, OSError):  # a hint never stops a worker
                    await self.register(worker, roles, task_types, place)
                await anyio.sleep(until_tick(BEAT_INTERVAL))  # with the process's other timers
        finally:
            if not halted():
                # shielded and brief; with no database the row just goes stale
                with (anyio.CancelScope(shield=True), anyio.move_on_after(2),
                      contextlib.suppress(EchoError, OSError)):
                    await self.forget(worker)

    async def pending_kinds(self) -> list[tuple[str | None, str, str | None, int]]:
        """(role, task type, the place its worktree is at, how many) of the pending
        tasks."""
        async with self.db.acquire() as conn:
            rows = await conn.fetch(_Q["pending_kinds"])
        return [(r["assigned_role"], r["task_type"], r["workspace_at"], r["n"]) for r in rows]

    async def serving(self, fresh: float = FRESH_WITHIN) -> list[Serving]:
        """The pools seen within `fresh` seconds."""
        async with self.db.acquire() as conn:
            rows = await conn.fetch(_Q["live"], fresh)
        return [Serving(r["worker"], None if r["roles"] is None else tuple(r["roles"]),
                        tuple(r["task_types"]), r["place"]) for r in rows]
