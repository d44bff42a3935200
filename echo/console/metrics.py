"""Prometheus metrics at `/metrics`, every name under `echo_`.

Two sources, as pgqueuer keeps metrics an adapter rather than counters sprinkled
through the code:

- **At scrape time** (`OrgCollector`): the organisation as it is now, read through
  the console's data seam: agents' states, restarts, inbox lag and messages handled,
  tasks by outcome (`echo.work.OUTCOMES`: skipped apart from failed), messages
  published, spend per role.
- **From the event feed** (`FeedMetrics`): what happened while this console ran,
  observed on the events the hub reads anyway: claim-to-start latency (enqueued to
  claimed) and task duration histograms, and Claude runs by outcome.

Each console keeps its own registry, so two apps in one process (tests) never clash.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from echo.org.feed import Event
from echo.work import task_outcome

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_FINISHED = {"completed", "failed", "dead", "cancelled", "retry_scheduled"}


class OrgCollector(Collector):
    """Reads the snapshot the console made just before the scrape (see `Metrics.render`)."""

    def __init__(self) -> None:
        self.snapshot: dict[str, Any] = {}

    def collect(self) -> Iterator[Any]:
        snap = self.snapshot
        agents = snap.get("agents", [])
        state = GaugeMetricFamily("echo_agent_state", "1 for the state each agent is in",
                                  labels=["role", "state"])
        restarts = CounterMetricFamily("echo_agent_restarts", "Restarts of each agent process",
                                       labels=["role"])
        lag = GaugeMetricFamily("echo_inbox_lag", "Messages waiting for each agent", labels=["role"])
        delivered = CounterMetricFamily(
            "echo_messages_delivered", "Messages each agent has processed since it started", labels=["role"])
        for a in agents:
            state.add_metric([a["role"], str(a.get("state"))], 1)
            restarts.add_metric([a["role"]], float(a.get("restarts") or 0))
            if a.get("inbox_lag") is not None:
                lag.add_metric([a["role"]], float(a["inbox_lag"]))
            if a.get("processed") is not None:
                delivered.add_metric([a["role"]], float(a["processed"]))
        yield from (state, restarts, lag, delivered)
        tasks = GaugeMetricFamily("echo_tasks", "Tasks by status as the task list shows it (skipped apart "
                                  "from failed)", labels=["status"])
        for status, n in snap.get("tasks", {}).items():
            tasks.add_metric([status], float(n))
        yield tasks
        if "messages" in snap:
            yield CounterMetricFamily("echo_messages_published", "Messages committed to the bus",
                                      value=float(snap["messages"]))
        spend = CounterMetricFamily("echo_spend_usd", "Recorded cost of Claude runs, per role",
                                    labels=["role"])
        for row in snap.get("spend", []):
            spend.add_metric([row["role"] or "-"], float(row["cost_usd"]))
        yield spend
        yield GaugeMetricFamily("echo_database_up", "1 when the console reaches Postgres",
                                value=1.0 if snap.get("database_ok") else 0.0)


class Metrics:
    """The console's registry: scrape-time gauges plus what the event feed showed."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.org = OrgCollector()
        self.registry.register(self.org)
        self.clients = Gauge("echo_console_clients", "Live event stream clients", registry=self.registry)
        self.claim_latency = Histogram(
            "echo_task_claim_latency_seconds", "From enqueued (or runnable again) to claimed",
            buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600), registry=self.registry)
        self.duration = Histogram(
            "echo_task_duration_seconds", "Run time of finished tasks",
            buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600), registry=self.registry)
        self.claude_runs = Counter("echo_claude_runs", "Claude task runs by outcome", ["outcome"],
                                   registry=self.registry)
        self.events = Counter("echo_console_events", "Events the console read, by kind", ["kind"],
                              registry=self.registry)
        self._queued: OrderedDict[str, tuple[float, str | None]] = OrderedDict()

    def observe(self, event: Event) -> None:
        """Called by the hub for every event it reads."""
        self.events.labels(event.subject_type).inc()
        if event.subject_type != "task":
            return
        action = event.action.removeprefix("task.")
        task = event.subject_id
        at = event.at.timestamp()
        if action == "enqueued":
            self._remember(task, at, event.details.get("type"))
        elif action in ("requeued", "released", "retry_scheduled"):
            kind = self._queued.get(task, (0.0, None))[1]
            self._remember(task, at, kind)
        elif action == "claimed" and task in self._queued:
            queued_at, kind = self._queued[task]
            self.claim_latency.observe(max(at - queued_at, 0.0))
            self._queued[task] = (queued_at, kind)
        if action in _FINISHED:
            if event.details.get("duration_sec") is not None:
                self.duration.observe(float(event.details["duration_sec"]))
            kind = self._queued.get(task, (0.0, None))[1]
            if kind == "claude":  # in the tasks' words: a failure without Claude is skipped
                self.claude_runs.labels(task_outcome(action, event.details.get("error"))).inc()

    def _remember(self, task: str, at: float, kind: str | None) -> None:
        self._queued[task] = (at, kind)
        self._queued.move_to_end(task)
        while len(self._queued) > 10_000:
            self._queued.popitem(last=False)

    def render(self, snapshot: dict[str, Any], clients: int) -> bytes:
        self.org.snapshot = snapshot
        self.clients.set(clients)
        return generate_latest(self.registry)
