"""The GenAI spans of a workflow (issue 21 item 6), with the SDK's in-memory exporter
and the REAL `claude` CLI against the fake API: each role's part of a workflow is one
`invoke_workflow <role>` span (its session as the conversation id, the workflow's
final phase), and the `invoke_agent` spans of that role's runs (its questions, and the
task the decision gave it, run by its pool) are its children, in its trace. The CEO's
and the CTO's agents run in this process, as each does in its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from echo.config import Settings
from echo.db import Database
from echo.org.agent.deciders import ClaudeDecider
from echo.org.roles import load_roles
from echo.org.workflow import WorkflowAgent, WorkflowStore
from echo.runtime import Backoff
from echo.work import ClaudeExecutor, ExecutorPool
from tests.e2e import test_claude_executor as executor_tests
from tests.fakes.anthropic import FakeAnthropic, text
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
export = pytest.importorskip("opentelemetry.sdk.trace.export")

claude_bin = executor_tests.claude_bin
api = executor_tests.api
ROLES = ("ceo", "cto")


def route_workflow(api: FakeAnthropic) -> None:
    def answer(data: object) -> Any:
        return text(json.dumps(data))

    api.route("[echo:select]", answer({"participate": True, "reason": "mine"}))
    api.route("[echo:position]", answer({"position": "migrate in two steps"}))
    api.route("[echo:vote]", answer({"vote": "approve", "reason": "sound"}))
    api.route("[echo:decide]", answer({"outcome": "approved", "summary": "migrate",
                                       "tasks": [{"role": "cto", "description": "Plan it"}]}))
    api.script(text("Plan written"))  # the task's run


async def test_each_roles_part_is_an_invoke_workflow_span_over_its_runs(
    settings: Settings, db: Database, claude_bin: str, api: FakeAnthropic, tmp_path: Path
) -> None:
    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    otel = provider.get_tracer("test")
    s = settings.model_copy(update={"claude_bin": claude_bin})
    home = tmp_path / "home"
    home.mkdir()
    env = {**api.env(), "HOME": str(home)}
    route_workflow(api)
    roles, store = load_roles(s.agents_dir), WorkflowStore(db)
    agents = [WorkflowAgent(s, db, roles[r], tick=0.05, otel=otel, decider=ClaudeDecider(
        s, roles[r], env=env, conversations=store, otel=otel)) for r in ROLES]
    pool = ExecutorPool(s.work, db, {"claude": ClaudeExecutor(s.claude, s.database, env=env, otel=otel)},
                        concurrency=1, roles=["cto"], backoff=Backoff(initial=0.05, max=0.1))

    def finished(prefix: str) -> list[Any]:
        return [x for x in exporter.get_finished_spans() if x.name.startswith(prefix)]

    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        for agent in agents:
            await tg.start(agent.run)
        wf = await store.create(subject="Move the API to the cloud", body="", started_by="ceo",
                                roles=list(ROLES), rounds=1, quorum="majority",
                                decider_timeout=60, phase_timeout=600)
        # Each agent ends its span at its first look after the workflow is done.
        await wait_until(lambda: len(finished("invoke_workflow")) == 2, timeout=180,
                         interval=0.05)
        pool.stop()
        tg.cancel_scope.cancel()

    got = await store.get(wf)
    assert got is not None and got.phase == "done"
    [task] = [t for t in await store.decision_tasks(wf)]
    assert task.status == "completed"
    workflows = {x.attributes["gen_ai.agent.name"]: x for x in finished("invoke_workflow")}
    assert set(workflows) == set(ROLES)
    for role, span in workflows.items():
        assert span.name == f"invoke_workflow {role}" and span.parent is None
        assert span.attributes["gen_ai.operation.name"] == "invoke_workflow"
        assert span.attributes["echo.workflow.id"] == wf
        assert span.attributes["echo.workflow.phase"] == "done"
        assert span.attributes["gen_ai.conversation.id"] == await store.conversation(wf, role)
    runs: dict[str, list[Any]] = {r: [] for r in ROLES}
    for run in finished("invoke_agent"):
        role = run.attributes["gen_ai.agent.name"]
        parent = workflows[role]
        assert run.parent is not None and run.parent.span_id == parent.context.span_id
        assert run.context.trace_id == parent.context.trace_id
        runs[role].append(run)
    # The CEO: take part, position, vote, decide; the CTO: three questions and its task.
    assert len(runs["ceo"]) == 4
    assert sorted(r.attributes["echo.task.id"] for r in runs["cto"]) == [0, 0, 0, task.task_id]
    # The questions of one role were one conversation: the same session on every run.
    for role in ROLES:
        questions = [r for r in runs[role] if not r.attributes["echo.task.id"]]
        assert {r.attributes["gen_ai.conversation.id"] for r in questions} == {
            workflows[role].attributes["gen_ai.conversation.id"]}
