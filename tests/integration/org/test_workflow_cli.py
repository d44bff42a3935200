"""`echoctl workflow ...` and `decisions` as a user meets them (no agents running):
one line on an unmigrated namespace, a clear refusal when no agent is up, `cancel`,
and a concise `show` that fits 80 columns without cutting a role name."""

from __future__ import annotations

from echo import db as dbmod
from echo.bus import Kind, Message, Publisher, workflow_channel
from echo.config import Settings
from echo.org.client import Client
from echo.org.workflow import WorkflowStore, post_uuid
from tests.helpers import run_cli

REASON = "ClaudeNotInstalled: no claude CLI at /nonexistent/claude; install it with make setup"


async def test_an_unmigrated_namespace_is_one_line(settings: Settings) -> None:
    bare = settings.model_copy(update={"namespace": settings.namespace + "_bare"})
    try:
        for args in (["workflow", "list"], ["workflow", "show", "1"], ["decisions"],
                     ["workflow", "start", "x"], ["workflow", "cancel", "1"]):
            out = await run_cli(bare, *args)
            assert out.returncode == 1, (args, out.stderr)
            assert out.stderr.count("\n") == 1 and "is not migrated" in out.stderr, out.stderr
            assert "run `echoctl db migrate`" in out.stderr and "Traceback" not in out.stderr
    finally:
        await dbmod.drop_namespace(bare.database)


async def test_start_with_no_agent_up_says_how_to_start_them(settings: Settings,
                                                             db: dbmod.Database) -> None:
    out = await run_cli(settings, "workflow", "start", "Anyone there?")
    assert out.returncode == 1 and "no agent is up" in out.stderr and "echoctl up" in out.stderr
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM workflows") == 0


async def fallback_workflow(settings: Settings, db: dbmod.Database) -> str:
    """A workflow two long-named roles took part in, every step a fallback."""
    roles = ["product_manager", "senior_architect"]
    async with Client(settings) as c:
        wf = await c.start_workflow("Plan the quarterly roadmap and its architecture", roles=roles)
    store = WorkflowStore(db)
    async with Publisher(settings.bus, db) as pub:
        for role in roles:
            await store.record_participant(wf.id, role, participate=True, confidence=0.7,
                                           reason=f"keywords of the {role} matched: roadmap",
                                           decider="keyword", fallback_reason=REASON)
            for round_no in (1, 2):
                await pub.publish(Message.build(
                    uuid=post_uuid(wf.id, role, "position", round_no), kind=Kind.DISCUSSION,
                    channel=workflow_channel(wf.id), from_role=role, thread_id=wf.id,
                    subject=f"[{wf.id}] {role}, round {round_no}",
                    body={"workflow": wf.id, "round": round_no, "source": "fallback",
                          "fallback_reason": REASON,
                          "position": f"[fallback] the {role} supports it " + "in detail " * 30}))
    return wf.id


async def test_show_is_concise_fits_80_columns_and_states_the_fallback_once(
    settings: Settings, db: dbmod.Database
) -> None:
    wf_id = await fallback_workflow(settings, db)
    out = await run_cli(settings, "workflow", "show", wf_id.removeprefix("wf-"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, out.stdout
    assert out.stdout.count("ClaudeNotInstalled") == 1, out.stdout
    for role in ("product_manager", "senior_architect"):
        assert any(role in line for line in lines), out.stdout  # never cut (`product_m…`)
    steps = [line.split()[0:2] for line in lines if line.strip().startswith("round")]
    assert sorted(steps) == [["round", "1"]] * 2 + [["round", "2"]] * 2, out.stdout
    assert "workflow.started" not in out.stdout and len(lines) < 40

    verbose = await run_cli(settings, "workflow", "show", wf_id, "--verbose")
    assert verbose.returncode == 0 and "timeline" in verbose.stdout and "thread" in verbose.stdout
    listed = await run_cli(settings, "workflow", "list")
    assert listed.returncode == 0 and wf_id in listed.stdout


async def test_cancel_a_workflow(settings: Settings, db: dbmod.Database) -> None:
    wf_id = await fallback_workflow(settings, db)
    out = await run_cli(settings, "workflow", "cancel", wf_id)
    assert out.returncode == 0 and f"workflow {wf_id} cancelled (was selecting)" in out.stdout
    again = await run_cli(settings, "workflow", "cancel", wf_id)
    assert again.returncode == 2 and "already cancelled" in again.stderr
    missing = await run_cli(settings, "workflow", "show", "nosuch")
    assert missing.returncode == 1 and "`echoctl workflow list`" in missing.stderr
    shown = await run_cli(settings, "workflow", "show", wf_id)
    assert "cancelled" in shown.stdout.splitlines()[0]
