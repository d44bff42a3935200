"""One broken workflow does not stop the others (issue 15, bug 2): a permanent database
error in one workflow's step marks that workflow `error` with the reason, visible in
`workflow show`, and the other open workflows go on in the same tick."""

from __future__ import annotations

import json

from echo.bus import Publisher
from echo.config import Settings
from echo.db import Database
from echo.org import workflow
from echo.org.client import Client
from echo.org.roles import load_roles
from tests.helpers import run_cli


async def test_a_data_error_in_one_workflow_marks_it_error_and_the_others_go_on(
    org_settings: Settings,
) -> None:
    s = org_settings
    database = await Database.open(s.database, max_size=2)
    try:
        async with Client(s, database=database) as client:
            broken = (await client.start_workflow("Move the API", roles=["cto"])).id
            fine = (await client.start_workflow("Move the API too", roles=["cto"])).id
        assert broken < fine  # the broken one comes first in the loop
        async with database.acquire() as conn:  # a real constraint, violated for one workflow
            await conn.execute(
                "ALTER TABLE workflow_participants ADD CONSTRAINT no_broken_wf "
                f"CHECK (workflow_id <> '{broken}') NOT VALID")
        cto = workflow.WorkflowAgent(s, database, load_roles(s.agents_dir)["cto"])
        async with Publisher(s.bus, database) as publisher:
            cto.part = cto.make_part(publisher.publish)

            await cto.step()  # must not raise: the error belongs to one workflow

            async with database.acquire() as conn:
                joined = await conn.fetch("SELECT workflow_id FROM workflow_participants")
                rows = {r["id"]: r for r in await conn.fetch("SELECT id, phase, error FROM workflows")}
            assert [r["workflow_id"] for r in joined] == [fine]
            assert rows[fine]["phase"] == "selecting"
            assert rows[broken]["phase"] == "error"
            assert "no_broken_wf" in rows[broken]["error"] and "23514" in rows[broken]["error"]

            await cto.step()  # a workflow in error is no longer open: nothing is tried again
        shown = await run_cli(s, "workflow", "show", broken, "--json")
        assert shown.returncode == 0, shown.stderr
        data = json.loads(shown.stdout)
        assert data["workflow"]["phase"] == "error" and "no_broken_wf" in data["workflow"]["error"]
        assert any(a["action"] == "workflow.error" for a in data["timeline"]), data["timeline"]
        text = await run_cli(s, "workflow", "show", broken)
        assert "phase error" in text.stdout and "no_broken_wf" in text.stdout, text.stdout
    finally:
        await database.close()
