"""OpenTelemetry GenAI spans of Claude runs and workflows: free unless asked for.

Per run, an `invoke_agent <role>` span (gen_ai.operation.name invoke_agent,
gen_ai.agent.name = the role, gen_ai.conversation.id = the session, the model and the
token usage from the `result`), and under it an `execute_tool <name>` span per tool
call (from its `tool_use` to its `tool_result`). The child gets the run span's
`TRACEPARENT`, so the CLI's own spans (when it exports any) nest under ECHO's.

Per workflow, in each agent that takes part, an `invoke_workflow <role>` span
(`WorkflowSpans`: gen_ai.operation.name invoke_workflow, gen_ai.agent.name = the role,
gen_ai.conversation.id = the role's session of the workflow, echo.workflow.id), open
from the agent's first look at the workflow until it leaves the open set; the runs
of the role's questions and of the tasks the decision gave it (run by the agent's
pool, in the same process) are its `invoke_agent` children.

Nothing is imported or exported unless OpenTelemetry is installed (the `otel` extra)
and either a tracer is given (tests: the SDK's in-memory exporter) or
OTEL_EXPORTER_OTLP_ENDPOINT is set, in which case `tracer()` installs an OTLP
exporter once per process.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

from echo.work.runs.stream import RunEvent

log = logging.getLogger(__name__)

_installed: Any = None  # the process's tracer once OTLP export is set up; False: not available
#: The open invoke_workflow spans of this process, by (role, workflow): a run of the
#: workflow (a question, or a task the decision assigned) is made under its role's.
_workflows: dict[tuple[str, str], Any] = {}


def tracer() -> Any:
    """The process's tracer when OTEL_EXPORTER_OTLP_ENDPOINT is set, else None."""
    global _installed
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return None
    if _installed is None:
        try:
            from opentelemetry import trace
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider = TracerProvider(resource=Resource.create({"service.name": "echo"}))
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            trace.set_tracer_provider(provider)
            _installed = trace.get_tracer("echo.work.runs")
        except ImportError:
            log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not "
                        "installed; install echo[otel] for traces")
            _installed = False
    return _installed or None


class RunSpans:
    """The spans of one run; every method is a no-op without a tracer."""

    def __init__(self, otel: Any, *, role: str | None, model: str | None,
                 task_id: int | None, attempt: int | None,
                 workflow_id: str | None = None) -> None:
        self.otel = otel
        self.span: Any = None
        self._tool: Any = None
        if otel is None:
            return
        name = role or "claude"
        parent = _workflows.get((name, workflow_id or ""))
        context = None
        if parent is not None:
            from opentelemetry import trace

            context = trace.set_span_in_context(parent)
        self.span = otel.start_span(f"invoke_agent {name}", context=context, attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name,
            "gen_ai.provider.name": "anthropic", "gen_ai.request.model": model or "",
            "echo.task.id": task_id or 0, "echo.task.attempt": attempt or 0})

    def env(self) -> dict[str, str]:
        """TRACEPARENT for the child, inside this run's span."""
        if self.span is None:
            return {}
        from opentelemetry import trace
        from opentelemetry.propagate import inject

        carrier: dict[str, str] = {}
        inject(carrier, context=trace.set_span_in_context(self.span))
        return {k.upper(): v for k, v in carrier.items()}

    def on_event(self, event: RunEvent) -> None:
        if self.span is None:
            return
        from opentelemetry import trace

        if event.kind == "init" and event.session_id:
            self.span.set_attribute("gen_ai.conversation.id", event.session_id)
        elif event.kind == "tool_use":
            self._end_tool()
            name = event.summary.split(" ", 1)[0]
            self._tool = self.otel.start_span(
                f"execute_tool {name}", context=trace.set_span_in_context(self.span),
                attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                            "echo.tool.summary": event.summary})
        elif event.kind == "tool_result":
            if self._tool is not None and event.summary.startswith("error: "):
                self._tool.set_attribute("error.type", "tool_error")
            self._end_tool()

    def _end_tool(self) -> None:
        if self._tool is not None:
            self._tool.end()
            self._tool = None

    def end(self, run: Any, error: BaseException | None = None) -> None:
        """Close the run's span with its ledger row's figures (`RunRecord`)."""
        if self.span is None:
            return
        self._end_tool()
        if run is not None:
            for key, value in (("gen_ai.usage.input_tokens", run.input_tokens),
                               ("gen_ai.usage.output_tokens", run.output_tokens),
                               ("gen_ai.response.model", run.model),
                               ("gen_ai.conversation.id", run.session_id),
                               ("echo.outcome", run.outcome), ("echo.cost_usd", run.cost_usd)):
                if value is not None:
                    self.span.set_attribute(key, value)
        if error is not None:
            self.span.set_attribute("error.type", type(error).__name__)
        self.span.end()


class WorkflowSpans:
    """The open `invoke_workflow` span of each workflow one role is taking part in;
    every method is a no-op without a tracer. An agent restarted mid-workflow opens a
    new span for the rest of it (a span lives in one process)."""

    def __init__(self, otel: Any, role: str) -> None:
        self.otel = otel
        self.role = role
        self.spans: dict[str, Any] = {}
        self._conversations: set[str] = set()  # workflows whose span has its session

    @contextlib.contextmanager
    def current(self, workflow_id: str, subject: str) -> Iterator[None]:
        """Inside the workflow's span (opened at the first call): runs started here
        are its children."""
        if self.otel is None:
            yield
            return
        from opentelemetry import trace

        span = self.spans.get(workflow_id)
        if span is None:
            span = self.spans[workflow_id] = self.otel.start_span(
                f"invoke_workflow {self.role}", context=trace.set_span_in_context(
                    trace.INVALID_SPAN), attributes={
                    "gen_ai.operation.name": "invoke_workflow", "gen_ai.agent.name": self.role,
                    "gen_ai.provider.name": "anthropic", "echo.workflow.id": workflow_id,
                    "echo.workflow.subject": subject[:200]})
            _workflows[(self.role, workflow_id)] = span
        with trace.use_span(span, end_on_exit=False, record_exception=False,
                            set_status_on_exception=False):
            yield

    def wants_conversation(self, workflow_id: str) -> bool:
        """Whether the span still lacks the role's session id."""
        return workflow_id in self.spans and workflow_id not in self._conversations

    def conversation(self, workflow_id: str, session_id: str) -> None:
        span = self.spans.get(workflow_id)
        if span is not None:
            span.set_attribute("gen_ai.conversation.id", session_id)
            self._conversations.add(workflow_id)

    def end(self, workflow_id: str, phase: str | None = None) -> None:
        span = self.spans.pop(workflow_id, None)
        self._conversations.discard(workflow_id)
        _workflows.pop((self.role, workflow_id), None)
        if span is not None:
            if phase is not None:
                span.set_attribute("echo.workflow.phase", phase)
            span.end()

    def ended_besides(self, open_ids: Iterable[str]) -> list[str]:
        """The workflows with a span that are no longer open (to `end`)."""
        still = set(open_ids)
        return [w for w in self.spans if w not in still]
