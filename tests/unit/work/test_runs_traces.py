"""GenAI spans of a Claude run, with the SDK's in-memory exporter: invoke_agent per run
(the role as agent name, the session as conversation id, token usage), execute_tool per
tool call under it, and TRACEPARENT handed to the child inside the run's span. The
child is a small script printing a stream-json conversation."""

from __future__ import annotations

import json
import sys

import pytest

from echo.work.claude import run_claude
from echo.work.governor.ledger import RunRecord

pytestmark = pytest.mark.anyio

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
export = pytest.importorskip("opentelemetry.sdk.trace.export")

LINES = [
    {"type": "system", "subtype": "init", "session_id": "s-9", "model": "claude-sonnet-5"},
    {"type": "assistant", "message": {"id": "m1", "content": [
        {"type": "tool_use", "name": "Read", "input": {"file_path": "a.py"}}]}},
    {"type": "user", "message": {"content": [{"type": "tool_result", "content": "x = 1"}]}},
]
SCRIPT = f"""
import json, os
for line in json.loads({json.dumps(json.dumps(LINES))}):
    print(json.dumps(line), flush=True)
print(json.dumps({{"type": "result", "subtype": "success", "is_error": False,
                  "result": os.environ.get("TRACEPARENT", ""), "session_id": "s-9",
                  "num_turns": 2, "total_cost_usd": 0.01,
                  "usage": {{"input_tokens": 120, "output_tokens": 30}}}}))
"""


async def test_a_run_is_an_invoke_agent_span_with_its_tool_calls_under_it() -> None:
    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    record = RunRecord(kind="task", outcome="ok", role="cto", task_id=3, attempt=1,
                       model="sonnet")
    result = await run_claude([sys.executable, "-c", SCRIPT], prompt="go", env={}, cwd=None,
                              time_limit=60, kill_grace=1, record=record,
                              otel=provider.get_tracer("test"))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"invoke_agent cto", "execute_tool Read"}
    run, tool = spans["invoke_agent cto"], spans["execute_tool Read"]
    assert run.attributes["gen_ai.agent.name"] == "cto"
    assert run.attributes["gen_ai.conversation.id"] == "s-9"
    assert (run.attributes["gen_ai.usage.input_tokens"],
            run.attributes["gen_ai.usage.output_tokens"]) == (120, 30)
    assert tool.parent is not None and tool.parent.span_id == run.context.span_id
    assert tool.attributes["gen_ai.tool.name"] == "Read"
    traceparent = result.output["result"]
    assert traceparent.split("-")[1] == f"{run.context.trace_id:032x}"
    assert traceparent.split("-")[2] == f"{run.context.span_id:016x}"


async def test_without_a_tracer_or_an_endpoint_a_run_makes_no_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    record = RunRecord(kind="task", outcome="ok", role="cto")
    result = await run_claude([sys.executable, "-c", SCRIPT], prompt="go", env={}, cwd=None,
                              time_limit=60, kill_grace=1, record=record)
    assert result.output["result"] == ""  # no TRACEPARENT handed to the child
