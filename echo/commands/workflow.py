"""`echoctl workflow start | list | show | cancel`, `echoctl decisions` and `echoctl train`.

`start` creates the workflow and broadcasts it to the agents that are up; they do
the rest (echo/org/workflow/). `--wait` follows it until it is finished. `show`
is concise by default: who took part and why, one line per position and vote
(naming its round), the decision and the tasks, with the reason for any fallback
stated once; `--verbose` adds the full thread and the timeline, `--json` gives
everything. `train` runs a scenario from training/ (see training/README.md) and
checks it. Rendering only: the data comes from echo.org.client.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import anyio
import typer
from rich.markup import escape

from echo.bus import Kind, StoredMessage
from echo.commands._common import (
    JsonOpt,
    clip,
    console,
    emit_json,
    plain_table,
    role_column,
    settings,
    with_client,
)
from echo.config import Settings
from echo.errors import EchoError
from echo.org.client import Client
from echo.org.node.state import read_org, running_org
from echo.org.roles import role_names
from echo.org.status import OrgStatus
from echo.org.workflow import Phase, WorkflowDetail
from echo.org.workflow.training import Check, Scenario, delivery_checks

workflow_app = typer.Typer(
    help="The collaborative workflow: start, list, show, cancel.", no_args_is_help=True
)
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Every message and the full timeline.")


def register(app: typer.Typer) -> None:
    app.add_typer(workflow_app, name="workflow")
    app.command("decisions")(decisions)
    app.command("train")(train)


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
    repo: str | None = typer.Option(None, "--repo",
                                    help="A repository (`echoctl repo add`) the decision's tasks work in."),
    wait: bool = typer.Option(False, "--wait", help="Follow the workflow until it is done."),
    timeout: float = typer.Option(600.0, "--timeout", min=1, help="With --wait: give up after this."),
    as_json: bool = JsonOpt,
) -> None:
    """Start a workflow: the agents that are up self-select, discuss, vote; the CEO decides."""
    s = settings(ctx)

    async def go(c: Client) -> WorkflowDetail:
        wf = await c.start_workflow(subject, body=body, sender=sender, rounds=rounds, quorum=quorum,
                                    decider_timeout=decider_timeout, phase_timeout=phase_timeout,
                                    repo=repo)
        if wait:
            await c.wait_workflow(wf.id, timeout)
        return await c.workflow(wf.id)

    data = with_client(s, go)
    if as_json:
        emit_json(data)
    elif wait:
        _print(data, verbose=False)
    else:
        w = data.workflow
        where = f" in repository {escape(str(w.repo.get('name')))}" if w.repo else ""
        console.print(
            f"started {w.id}: {escape(w.subject)} (asked: {', '.join(w.roles)}){where}; "
            f"`echoctl workflow show {w.id}`"
        )


def _round(phase: Phase, round_no: int) -> str:
    return str(round_no) if phase == Phase.DISCUSSING else "-"


@workflow_app.command("list")
def list_workflows(
    ctx: typer.Context, limit: int = typer.Option(20, "--limit", min=1, max=1000), as_json: bool = JsonOpt
) -> None:
    """Workflows, newest first, with their phase."""
    s = settings(ctx)
    rows = with_client(s, lambda c: c.workflows(limit))
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console.print("no workflows; `echoctl workflow start SUBJECT` starts one")
        return
    table = plain_table("id", "subject", "phase", "round", "consensus")
    role_column(table, "started by", (r.started_by for r in rows))
    table.add_column("created", no_wrap=True)
    for r in rows:
        table.add_row(r.id, escape(r.subject), str(r.phase), _round(r.phase, r.round),
                      r.consensus or "-", r.started_by, r.created_at.strftime("%Y-%m-%d %H:%M:%S"))
    console.print(table)


@workflow_app.command("show")
def show(
    ctx: typer.Context,
    workflow_id: str = typer.Argument(..., help="wf-N or N."),
    verbose: bool = VerboseOpt,
    as_json: bool = JsonOpt,
) -> None:
    """A workflow: who took part and why, positions, votes, the decision, the tasks."""
    s = settings(ctx)
    data = with_client(s, lambda c: c.workflow(workflow_id))
    if as_json:
        emit_json(data)
    else:
        _print(data, verbose=verbose)


@workflow_app.command("cancel")
def cancel(ctx: typer.Context, workflow_id: str = typer.Argument(..., help="wf-N or N.")) -> None:
    """Stop an unfinished workflow (its queued tasks stay; `echoctl tasks cancel` them)."""
    s = settings(ctx)

    async def go(c: Client) -> tuple[str, Phase]:
        before = await c.cancel_workflow(workflow_id)
        return (await c.workflow(workflow_id)).workflow.id, before

    wf_id, before = with_client(s, go)
    console.print(f"workflow {wf_id} cancelled (was {before})")


# ------------------------------------------------------------------ rendering a workflow


def _body(m: StoredMessage) -> dict[str, Any]:
    return m.body if isinstance(m.body, dict) else {}


def _fallbacks(data: WorkflowDetail) -> list[str]:
    """Each distinct reason a step fell back (no model used), in order of appearance."""
    found: list[str] = []
    reasons = [p.fallback_reason for p in data.participants]
    reasons += [_body(m).get("fallback_reason") for m in data.messages]
    reasons += [data.decision.fallback_reason if data.decision else None]
    for reason in reasons:
        if reason and reason not in found:
            found.append(reason)
    return found


def _said(m: StoredMessage) -> str:
    body = _body(m)
    if "position" in body:
        text = str(body["position"])
    elif "vote" in body:
        text = f"{body['vote']}: {body.get('reason', '')}"
    elif "task" in body:
        t = body["task"]
        said = t.get("error") or t.get("result") or ""
        text = said if t.get("status") == "skipped" else f"task {t.get('task_id')} {t.get('status')}: {said}"
    elif "summary" in body:
        text = f"{body.get('outcome')}: {body['summary']}"
    else:
        text = str(body.get("text") or m.subject)
    source = body.get("source")
    return f"{text} [{source}]" if source else text


def _print(data: WorkflowDetail, *, verbose: bool) -> None:
    w = data.workflow
    console.print(
        f"[bold]{w.id}[/bold] {escape(w.subject)}: phase {w.phase}"
        f"{' (round ' + str(w.round) + ')' if w.phase == Phase.DISCUSSING else ''}, "
        f"consensus {w.consensus or '-'}, quorum {w.quorum}, {w.rounds} round(s)"
    )
    if w.repo:
        console.print(f"repository {escape(str(w.repo.get('name')))}: the decision's tasks work in it")
    if w.error:
        console.print(f"[red]error:[/] {escape(w.error)}")
    fallbacks = _fallbacks(data)
    for reason in fallbacks:
        console.print(f"[yellow]fallback[/] (no model used): {escape(clip(reason, 300))}")
    roles = [p.role for p in data.participants] + [m.from_role for m in data.messages]

    table = plain_table(title="who took part", title_justify="left")
    role_column(table, "role", roles)
    for name in ("takes part", "decider", "why"):
        table.add_column(name, no_wrap=name != "why")
    for p in data.participants:
        table.add_row(p.role, f"yes ({p.confidence:.2f})" if p.participate else "no",
                      p.decider, escape(p.reason))
    console.print(table)

    posts = [m for m in data.messages if m.kind in (Kind.DISCUSSION, Kind.VOTE)]
    if posts:
        table = plain_table(title="positions and votes", title_justify="left")
        table.add_column("step", no_wrap=True)
        role_column(table, "role", roles)
        table.add_column("said", no_wrap=not verbose)
        room = max(20, console.width - len("round 10 ") - max(len(r) for r in roles) - 2)
        for m in posts:
            body = _body(m)
            step = f"round {body.get('round', '-')}" if m.kind == Kind.DISCUSSION else "vote"
            text = _said(m) if verbose else clip(_said(m), room)  # one line each
            table.add_row(step, m.from_role, escape(text))
        console.print(table)

    d = data.decision
    if d:
        console.print(escape(f"decision {d.id} by {d.decided_by} [{d.source}]: {d.outcome} "
                             f"(vote: {d.consensus}): {d.summary}"))
    if data.tasks:
        table = plain_table(title="tasks", title_justify="left")
        table.add_column("task")
        role_column(table, "role", [t.role for t in data.tasks])
        table.add_column("status", no_wrap=True)
        table.add_column("outcome")
        for t in data.tasks:
            outcome = "" if t.status == "skipped" else str(t.waiting or t.error or t.result or "")
            table.add_row(str(t.task_id), t.role or "-", t.status,
                          escape(outcome if verbose else clip(outcome, 200)))
        console.print(table)
    if not verbose:
        console.print(f"[dim]`echoctl workflow show {w.id} --verbose` for every message and the timeline[/]")
        return
    table = plain_table("id", "at", title="thread", title_justify="left")
    role_column(table, "from", [m.from_role for m in data.messages])
    table.add_column("kind")
    table.add_column("said")
    for m in data.messages:
        table.add_row(str(m.id), m.created_at.strftime("%H:%M:%S"), m.from_role, str(m.kind),
                      escape(_said(m)))
    console.print(table)
    table = plain_table("at", title="timeline", title_justify="left")
    role_column(table, "actor", [a.actor for a in data.timeline])
    table.add_column("action")
    for a in data.timeline:
        step = a.action
        if a.action == "workflow.discussing" and "round" in a.details:
            step += f" (round {a.details['round']})"
        table.add_row(a.at.strftime("%H:%M:%S"), a.actor, step)
    console.print(table)


def decisions(
    ctx: typer.Context, limit: int = typer.Option(20, "--limit", min=1, max=1000), as_json: bool = JsonOpt
) -> None:
    """The decisions the CEO wrote, newest first."""
    s: Settings = settings(ctx)
    rows = with_client(s, lambda c: c.decisions(limit))
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console.print("no decisions yet; a workflow ends in one (`echoctl workflow list`)")
        return
    table = plain_table("id", "workflow", "subject", "outcome", "vote")
    role_column(table, "by", (r.decided_by for r in rows))
    for name in ("source", "tasks", "summary"):
        table.add_column(name)
    for r in rows:
        table.add_row(str(r.id), r.workflow_id, escape(r.subject or ""), r.outcome, r.consensus,
                      r.decided_by, r.source, str(len(r.tasks)), escape(clip(r.summary, 120)))
    console.print(table)


# ------------------------------------------------------------------ training


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


async def _agents_ok(c: Client, roles: list[str], within: float) -> dict[str, Any] | None:
    """The agents' status once all of `roles` are healthy, or None after `within` s."""
    with anyio.move_on_after(within):
        while True:
            status: OrgStatus = await c.status(remote=False)
            agents = {a.role: a for a in status.agents}
            if all(r in agents and agents[r].state == "healthy" for r in roles):
                return agents
            await anyio.sleep(0.2)
    return None


def train(
    ctx: typer.Context,
    scenario: str = typer.Argument(..., help="training/NAME.toml or a path."),
    as_json: bool = JsonOpt,
) -> None:
    """Run a training scenario and check it (exit: failures). Starts the organisation
    (staggered) if none is running, and stops it again afterwards."""
    s = settings(ctx)
    path, spec = Scenario.load(scenario)
    started_here = _bring_up(s)
    record = read_org(s)
    known = list(record.agents) if record else role_names(s.agents_dir)  # the roles that run

    async def go(c: Client) -> tuple[list[Check], WorkflowDetail]:
        checks: list[Check] = []
        agents = await _agents_ok(c, known, 60)
        checks.append(Check(ok=agents is not None, check=f"{len(known)} agents started and healthy"))
        if spec.stable_seconds and agents is not None:
            await anyio.sleep(spec.stable_seconds)  # the point of the check: time passing without trouble
            later = await _agents_ok(c, known, 0.5)
            steady = later is not None and all(later[r].restarts == agents[r].restarts for r in known)
            checks.append(Check(ok=steady,
                                check=f"agents stable for {spec.stable_seconds:g} s (healthy, no restarts)"))
        live = [r for r in known if r in await c.live_roles()] or known
        wf = await c.start_workflow(
            spec.subject, body=spec.body, rounds=spec.rounds, quorum=spec.quorum,
            decider_timeout=spec.decider_timeout, phase_timeout=spec.phase_timeout, roles=live)
        await c.wait_workflow(wf.id, spec.timeout)
        checks += delivery_checks(await c.workflow_delivery(wf.id), live)
        return checks, await c.workflow(wf.id)

    try:
        checks, data = with_client(s, go)
    finally:
        if started_here:
            _bring_down(s)
    checks += spec.check(data)
    failed = sum(not c.ok for c in checks)
    if as_json:
        emit_json({"scenario": str(path), "workflow": data.workflow.id, "failed": failed,
                   "checks": [c.model_dump() for c in checks]})
    else:
        console.print(f"scenario {path.stem}: workflow {data.workflow.id}")
        for c in checks:
            console.print(f"{'✓' if c.ok else '✗'} {escape(c.check)}")
    raise typer.Exit(min(failed, 100))
