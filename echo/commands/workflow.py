"""`echoctl workflow start | list | show`, `echoctl decisions` and `echoctl train`.

`start` creates the workflow and broadcasts it; the running agents do the rest
(echo/org/workflow.py). `--wait` follows it until it is done. `show` prints its
timeline from Postgres: phases, who took part and which decider said so,
positions (marked `fallback` when no model wrote them), votes, the decision and
each task's outcome (`skipped` when Claude was unavailable, never `completed`).
`train` runs a scenario from training/ (see training/README.md) and checks it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import anyio
import typer
from rich.markup import escape
from rich.table import Table

from echo.bus.envelope import NON_AGENT_SENDERS, check_role
from echo.commands._common import JsonOpt, console, emit_json, run, settings
from echo.config import Settings, project_path
from echo.db import Database
from echo.errors import ConfigError, EchoError, NotFound, UsageError
from echo.org import workflow as wf
from echo.org.roles import role_names
from echo.org.state import read_org, running_org

workflow_app = typer.Typer(
    help="The collaborative workflow: start, list, show a timeline.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(workflow_app, name="workflow")
    app.command("decisions")(decisions)
    app.command("train")(train)


def _rows(s: Settings, query: str, limit: int) -> list[dict[str, Any]]:
    """The rows of one named workflow query, newest first."""

    async def fetch() -> list[dict[str, Any]]:
        database = await Database.open(s, max_size=1)
        try:
            async with database.acquire() as conn:
                return [dict(r) for r in await conn.fetch(wf.Q[query], limit)]
        finally:
            await database.close()

    return run(fetch)


async def snapshot(database: Database, workflow_id: str) -> dict[str, Any]:
    """Everything about one workflow, as JSON-able data."""
    async with database.acquire() as conn:
        row = await conn.fetchrow(wf.Q["get"], workflow_id)
        if row is None:
            raise NotFound(f"no workflow {workflow_id!r}; `echoctl decisions` lists decided ones")
        participants = [dict(r) for r in await conn.fetch(wf.Q["participants"], workflow_id)]
        thread = [dict(r) for r in await conn.fetch(wf.Q["thread"], workflow_id)]
        decision = await conn.fetchrow(wf.Q["decision_of"], workflow_id)
        ids = [t["task_id"] for t in decision["tasks"] if t.get("task_id")] if decision else []
        tasks = [wf.describe_task(r) for r in await conn.fetch(wf.Q["tasks"], ids)] if ids else []
        actions = [dict(r) for r in await conn.fetch(wf.Q["actions"], workflow_id)]
    return {
        "workflow": dict(row),
        "participants": participants,
        "messages": thread,
        "decision": dict(decision) if decision else None,
        "tasks": tasks,
        "timeline": actions,
    }


def _normalise_id(value: str) -> str:
    return f"wf-{value}" if value.isdigit() else value


@workflow_app.command("start")
def start(
    ctx: typer.Context,
    subject: str = typer.Argument(..., help="What the organisation should decide."),
    body: str = typer.Option("", "--body", help="Details of the proposal."),
    sender: str = typer.Option("operator", "--from", help="Who starts it (a role or operator)."),
    rounds: int = typer.Option(2, "--rounds", min=1, max=10, help="Discussion rounds."),
    quorum: str = typer.Option("majority", "--quorum", help="majority or unanimous."),
    decider_timeout: float = typer.Option(
        30.0, "--decider-timeout", min=1, help="Seconds for one LLM answer before the fallback."
    ),
    phase_timeout: float = typer.Option(
        120.0, "--phase-timeout", min=1, help="Seconds a phase waits before the CEO moves on."
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow the workflow until it is done."),
    timeout: float = typer.Option(600.0, "--timeout", min=1, help="With --wait: give up after this."),
    as_json: bool = JsonOpt,
) -> None:
    """Start a workflow: the agents that are up self-select, discuss, vote; the CEO decides."""
    s = settings(ctx)
    check_role(sender, s.agents_dir, allow=NON_AGENT_SENDERS)
    known = role_names(s.agents_dir)
    if not known:
        raise UsageError(f"no roles found under {s.agents_dir}; set ECHO_AGENTS_DIR")

    async def go() -> dict[str, Any]:
        database = await Database.open(s, max_size=1)
        try:
            roles = await wf.live_roles(database, known)
            started = await wf.start(
                database,
                subject=subject,
                body=body,
                started_by=sender,
                roles=roles,
                rounds=rounds,
                quorum=quorum,
                decider_timeout=decider_timeout,
                phase_timeout=phase_timeout,
            )
            if wait:
                await _wait_done(database, started.workflow_id, timeout)
            return await snapshot(database, started.workflow_id)
        finally:
            await database.close()

    data = run(go)
    if as_json:
        emit_json(data)
    elif wait:
        _print(data)
    else:
        w = data["workflow"]
        console.print(
            f"started {w['id']}: {escape(w['subject'])} (asked: {', '.join(w['roles'])}); "
            f"`echoctl workflow show {w['id']}`"
        )


async def _wait_done(database: Database, workflow_id: str, limit: float) -> None:
    deadline = time.monotonic() + limit
    while True:
        async with database.acquire() as conn:
            row = await conn.fetchrow(wf.Q["get"], workflow_id)
        phase = row["phase"] if row else None
        if phase == "done":
            return
        if phase == "error":
            raise EchoError(f"workflow {workflow_id} failed: {row['error'] if row else ''}; "
                            f"`echoctl workflow show {workflow_id}` has its timeline")
        if time.monotonic() > deadline:
            raise EchoError(
                f"workflow {workflow_id} is still {phase} after {limit:g}s; are the agents "
                f"up (`echoctl status`)? `echoctl workflow show {workflow_id}` follows it"
            )
        await anyio.sleep(0.2)


@workflow_app.command("list")
def list_workflows(
    ctx: typer.Context, limit: int = typer.Option(20, "--limit", min=1, max=1000), as_json: bool = JsonOpt
) -> None:
    """Workflows, newest first, with their phase."""
    s = settings(ctx)

    rows = _rows(s, "list", limit)
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "subject", "phase", "round", "consensus", "started by", "created")
    for r in rows:
        table.add_row(
            r["id"],
            escape(r["subject"]),
            r["phase"],
            str(r["round"]),
            r["consensus"] or "-",
            r["started_by"],
            r["created_at"].strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(table)


@workflow_app.command("show")
def show(
    ctx: typer.Context, workflow_id: str = typer.Argument(..., help="wf-N or N."), as_json: bool = JsonOpt
) -> None:
    """A workflow's timeline: phases, participants, positions, votes, decision, task results."""
    s = settings(ctx)

    async def fetch() -> dict[str, Any]:
        database = await Database.open(s, max_size=1)
        try:
            return await snapshot(database, _normalise_id(workflow_id))
        finally:
            await database.close()

    data = run(fetch)
    if as_json:
        emit_json(data)
    else:
        _print(data)


def _said(m: dict[str, Any]) -> str:
    body = m["body"] if isinstance(m["body"], dict) else {}
    if "position" in body:
        text = body["position"]
    elif "vote" in body:
        text = f"{body['vote']}: {body.get('reason', '')}"
    elif "task" in body:
        t = body["task"]
        said = t.get("error") or t.get("result") or ""
        text = said if t["status"] == "skipped" else f"task {t['task_id']} {t['status']}: {said}"
    elif "summary" in body:
        text = f"{body.get('outcome')}: {body['summary']}"
    else:
        text = str(body.get("text") or m["subject"])
    source = body.get("source")
    mark = f" [{source}]" if source else ""
    return f"{text}{mark}"


def _print(data: dict[str, Any]) -> None:
    w = data["workflow"]
    console.print(
        f"[bold]{w['id']}[/bold] {escape(w['subject'])}: phase {w['phase']}"
        f"{' (round ' + str(w['round']) + ')' if w['phase'] == 'discussing' else ''}, "
        f"consensus {w['consensus'] or '-'}, quorum {w['quorum']}, rounds {w['rounds']}"
    )
    if w.get("error"):
        console.print(f"[red]error[/red]: {escape(w['error'])}")
    table = Table("role", "takes part", "confidence", "decider", "reason", title="self-selection")
    for p in data["participants"]:
        reason = p["reason"] + (f" (LLM not used: {p['fallback_reason']})" if p["fallback_reason"] else "")
        table.add_row(
            p["role"],
            "yes" if p["participate"] else "no",
            f"{p['confidence']:.2f}",
            p["decider"],
            escape(reason),
        )
    console.print(table)
    table = Table("id", "at", "from", "kind", "said", title="thread")
    for m in data["messages"]:
        table.add_row(
            str(m["id"]), m["created_at"].strftime("%H:%M:%S"), m["from_role"], m["kind"], escape(_said(m))
        )
    console.print(table)
    d = data["decision"]
    if d:
        console.print(
            escape(
                f"decision {d['id']} by {d['decided_by']} [{d['source']}]: {d['outcome']} "
                f"(vote: {d['consensus']}): {d['summary']}"
            )
        )
    table = Table("task", "role", "status", "outcome", title="tasks")
    for t in data["tasks"]:
        outcome = t.get("error") or t.get("result") or ""
        table.add_row(str(t["task_id"]), t["role"] or "-", t["status"], escape(str(outcome))[:200])
    if data["tasks"]:
        console.print(table)
    table = Table("at", "actor", "action", title="timeline")
    for a in data["timeline"]:
        table.add_row(a["at"].strftime("%H:%M:%S"), a["actor"], a["action"])
    console.print(table)


def decisions(
    ctx: typer.Context, limit: int = typer.Option(20, "--limit", min=1, max=1000), as_json: bool = JsonOpt
) -> None:
    """The decisions the CEO wrote, newest first."""
    s: Settings = settings(ctx)

    rows = _rows(s, "decisions", limit)
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "workflow", "subject", "outcome", "vote", "by", "source", "tasks", "summary")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["workflow_id"],
            escape(r["subject"]),
            r["outcome"],
            r["consensus"],
            r["decided_by"],
            r["source"],
            str(len(r["tasks"])),
            escape(r["summary"])[:120],
        )
    console.print(table)


_SCENARIO_KEYS = {
    "subject",
    "stable_seconds",
    "body",
    "rounds",
    "quorum",
    "decider_timeout",
    "phase_timeout",
    "timeout",
    "expect",
}
_EXPECT_KEYS = {"participants", "absent", "outcome", "tasks_for"}


def load_scenario(name: str) -> tuple[Path, dict[str, Any]]:
    """training/NAME.toml (or a path to a .toml file), checked key by key."""
    path = Path(name) if name.endswith(".toml") else project_path("training") / f"{name}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = sorted(p.stem for p in project_path("training").glob("*.toml"))
        raise UsageError(f"no scenario {path}; known: {', '.join(known) or 'none'}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the scenario ({exc})") from None
    unknown = (set(data) - _SCENARIO_KEYS) | (set(data.get("expect") or {}) - _EXPECT_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; see training/README.md")
    if not isinstance(data.get("subject"), str) or not data["subject"].strip():
        raise ConfigError(f"{path}: a scenario needs a subject")
    return path, data


def check_scenario(expect: dict[str, Any], data: dict[str, Any]) -> list[tuple[bool, str]]:
    """One (passed, line) per expectation, about a finished workflow's snapshot."""
    joined = {p["role"] for p in data["participants"] if p["participate"]}
    decision = data["decision"] or {}
    assigned = {t["role"] for t in decision.get("tasks") or []}
    checks = [(data["workflow"]["phase"] == "done", "the workflow completed")]
    for role in expect.get("participants") or []:
        checks.append((role in joined, f"{role} took part"))
    for role in expect.get("absent") or []:
        checks.append((role not in joined, f"{role} stayed out"))
    if "outcome" in expect:
        checks.append(
            (
                decision.get("outcome") == expect["outcome"],
                f"the decision is {expect['outcome']} (got {decision.get('outcome') or 'none'})",
            )
        )
    for role in expect.get("tasks_for") or []:
        checks.append((role in assigned, f"work assigned to {role}"))
    return checks


def _bring_up(s: Settings) -> bool:
    """Start the organisation (staggered) unless one runs from this state directory;
    True if this call started it, so the scenario also stops it."""
    if running_org(s) is not None:
        return False
    done = subprocess.run(
        [sys.executable, "-m", "echo", "up", "--staggered", "--detach"],
        env={**os.environ, **s.child_env()},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EchoError(f"the organisation did not start for the scenario: {reason}")
    return True


def _bring_down(s: Settings) -> None:
    subprocess.run(
        [sys.executable, "-m", "echo", "down"],
        env={**os.environ, **s.child_env()},
        capture_output=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )


async def _agents_ok(s: Settings, roles: list[str], within: float) -> dict[str, Any] | None:
    """The agents' status once all of `roles` are healthy, or None after `within` s."""
    from echo.commands.org import collect_status

    with anyio.move_on_after(within):
        while True:
            agents = {a["role"]: a for a in (await collect_status(s, remote=False))["agents"]}
            if all(agents.get(r, {}).get("state") == "healthy" for r in roles):
                return agents
            await anyio.sleep(0.2)
    return None


async def _delivery(database: Database, workflow_id: str, roles: list[str]) -> list[tuple[bool, str]]:
    """The proposal was stored, announced (Redis or NOTIFY) and processed by every agent."""
    async with database.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT id, published_at FROM messages WHERE thread_id = $1 ORDER BY id LIMIT 1", workflow_id
        )
        reached = (
            set()
            if row is None
            else {
                r["role"]
                for r in await conn.fetch("SELECT role FROM agent_inbox WHERE message_id = $1", row["id"])
            }
        )
    return [
        (
            row is not None and row["published_at"] is not None,
            "the proposal was stored in Postgres and announced",
        ),
        (set(roles) <= reached, f"the proposal reached all {len(roles)} agents"),
    ]


def train(
    ctx: typer.Context,
    scenario: str = typer.Argument(..., help="training/NAME.toml or a path."),
    as_json: bool = JsonOpt,
) -> None:
    """Run a training scenario and check it (exit: failures). Starts the organisation
    (staggered) if none is running, and stops it again afterwards."""
    s = settings(ctx)
    path, spec = load_scenario(scenario)
    stable = float(spec.get("stable_seconds", 0))
    started_here = _bring_up(s)
    record = read_org(s)
    known = list(record.agents) if record else role_names(s.agents_dir)  # the roles that run

    async def go() -> tuple[list[tuple[bool, str]], dict[str, Any]]:
        checks: list[tuple[bool, str]] = []
        agents = await _agents_ok(s, known, 60)
        checks.append((agents is not None, f"{len(known)} agents started and healthy"))
        if stable and agents is not None:
            await anyio.sleep(stable)  # the point of the check: time passing without trouble
            later = await _agents_ok(s, known, 0.5)
            steady = later is not None and all(later[r]["restarts"] == agents[r]["restarts"] for r in known)
            checks.append((steady, f"agents stable for {stable:g} s (healthy, no restarts)"))
        database = await Database.open(s, max_size=1)
        try:
            roles = await wf.live_roles(database, known)
            started = await wf.start(
                database,
                subject=spec["subject"],
                body=str(spec.get("body", "")),
                started_by="operator",
                roles=roles,
                rounds=int(spec.get("rounds", 2)),
                quorum=str(spec.get("quorum", "majority")),
                decider_timeout=float(spec.get("decider_timeout", 30)),
                phase_timeout=float(spec.get("phase_timeout", 120)),
            )
            await _wait_done(database, started.workflow_id, float(spec.get("timeout", 600)))
            checks += await _delivery(database, started.workflow_id, roles)
            return checks, await snapshot(database, started.workflow_id)
        finally:
            await database.close()

    try:
        checks, data = run(go)
    finally:
        if started_here:
            _bring_down(s)
    checks += check_scenario(spec.get("expect") or {}, data)
    failed = sum(not ok for ok, _ in checks)
    if as_json:
        emit_json(
            {
                "scenario": str(path),
                "workflow": data["workflow"]["id"],
                "failed": failed,
                "checks": [{"ok": ok, "check": line} for ok, line in checks],
            }
        )
    else:
        console.print(f"scenario {path.stem}: workflow {data['workflow']['id']}")
        for ok, line in checks:
            console.print(f"{'✓' if ok else '✗'} {escape(line)}")
    raise typer.Exit(min(failed, 100))
