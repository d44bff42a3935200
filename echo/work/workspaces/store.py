"""`RepositoryStore`: the `repositories` table and the merge queue's record.

The SQL lives in shared/sql/queries/repositories.sql; the audit rows
(`repo.added`, `repo.removed`, `merge.merging`, `merge.merged`, `merge.failed`) are
written by the triggers of shared/sql/022_repositories.sql, in the statement that
makes the change, with `echo.actor` set for the transaction.
"""

from __future__ import annotations

import json
from typing import Any

from echo.db import Database, load_queries
from echo.work.workspaces.repository import Repository

_Q = load_queries("repositories")


def _repository(row: Any) -> Repository:
    return Repository(row["name"], row["source"], row["base_branch"], row["test_command"],
                      row["push"], row["require_approval"])


class RepositoryStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def add(self, repo: Repository, *, actor: str = "operator") -> bool:
        """Store `repo`; False if the name is taken (nothing written)."""
        async with self.db.transaction() as conn:
            await conn.execute(_Q["set_actor"], actor)
            made = await conn.fetchval(_Q["add"], repo.name, repo.source, repo.base_branch,
                                       repo.test_command, repo.push, repo.require_approval)
        return made is not None

    async def get(self, name: str) -> Repository | None:
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(_Q["get"], name)
        return _repository(row) if row else None

    async def row(self, name: str) -> dict[str, Any] | None:
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(_Q["get"], name)
        return dict(row) if row else None

    async def all(self) -> list[dict[str, Any]]:
        async with self.db.acquire() as conn:
            return [dict(r) for r in await conn.fetch(_Q["list"])]

    async def remove(self, name: str, *, actor: str = "operator") -> bool:
        async with self.db.transaction() as conn:
            await conn.execute(_Q["set_actor"], actor)
            return await conn.fetchval(_Q["remove"], name) is not None

    async def candidates(self, name: str) -> list[dict[str, Any]]:
        """Completed tasks of the repository whose new head the queue has not taken up."""
        async with self.db.acquire() as conn:
            return [dict(r) for r in await conn.fetch(_Q["candidates"], name)]

    async def start_merge(self, task_id: int, repo: str, branch: str, head: str, *,
                          actor: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(_Q["set_actor"], actor)
            await conn.execute(_Q["start_merge"], task_id, repo, branch, head)

    async def finish_merge(self, task_id: int, status: str, reason: str | None,
                           merged_commit: str | None, *, actor: str,
                           send_back: int | None = None) -> bool:
        """Record the merge's outcome; with `send_back` (the task's send-backs so far,
        this one included) the task goes back to the queue in the same transaction.
        True if it was sent back."""
        async with self.db.transaction() as conn:
            await conn.execute(_Q["set_actor"], actor)
            await conn.execute(_Q["finish_merge"], task_id, status, reason, merged_commit)
            if send_back is None:
                return False
            return await conn.fetchval(_Q["send_back"], task_id, reason, send_back) is not None

    async def merges(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        async with self.db.acquire() as conn:
            return [dict(r) for r in await conn.fetch(_Q["merges"], name, limit)]

    async def task_states(self, task_ids: list[int]) -> dict[int, dict[str, Any]]:
        async with self.db.acquire() as conn:
            rows = await conn.fetch(_Q["task_states"], task_ids)
        return {r["task_id"]: dict(r) for r in rows}

    async def task_workspace(self, task_id: int) -> dict[str, Any] | None:
        """A task's repository (from its payload) and its result's `workspace`."""
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(_Q["task_workspace"], task_id)
        if row is None:
            return None
        out = dict(row)
        for key in ("repo", "workspace"):
            if isinstance(out[key], str):
                out[key] = json.loads(out[key])
        return out
