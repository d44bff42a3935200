"""One conversation per role per workflow (issue 21 item 5): what resuming saves.

A 3-participant workflow (the CEO, the CTO, the CHRO all take part; two discussion
rounds, a vote, the CEO's decision: 14 questions) run by three in-process workflow
agents, each with its real `ClaudeDecider` and the real CLI against the fake API,
on Postgres. Measured per mode, interleaved, medians of ECHO_BENCH_RUNS workflows:

- `cpu_s`: the CLI children's user+sys CPU seconds for the whole workflow
  (`getrusage(RUSAGE_CHILDREN)`, the agents being in this process; read once the
  agents have stopped, since a child counts once reaped);
- `wall_s`: from the workflow's creation to `done`;
- `resent`: what the later requests (every question but a role's first) carry:
  messages per request and bytes of their messages (about 4 bytes a token), the
  earlier turns a resumed session sends again (and, for scale, the whole request:
  Claude Code's system prompt and tool definitions, sent in both modes).

Modes (`workflow_conversation`): `off` (the baseline: a fresh CLI process and a fresh
conversation per question, as before), `resumed` (a process per question, resuming
the role's session) and `kept` (the default: one CLI process per role per workflow,
each question a stream-json line on its stdin). One line per figure and mode.

    python -m bench.conversations      (ECHO_TEST_DATABASE_URL or an embedded Postgres)
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import bench_settings, emit  # noqa: E402
from echo.config import Settings  # noqa: E402
from echo.db import Database  # noqa: E402
from echo.org.agent.deciders import ClaudeDecider  # noqa: E402
from echo.org.roles import load_roles  # noqa: E402
from echo.org.workflow import WorkflowAgent, WorkflowStore  # noqa: E402
from echo.work.claude_cli import LOCAL_CLAUDE  # noqa: E402
from tests.fakes.anthropic import FakeAnthropic, Request, text  # noqa: E402

RUNS = int(os.environ.get("ECHO_BENCH_RUNS", "3"))
ROLES = ("ceo", "cto", "chro")
MODES = ("off", "resumed", "kept")


def _answers(api: FakeAnthropic) -> None:
    def answer(data: object) -> Any:
        return text(json.dumps(data))

    api.route("[echo:select]", answer({"participate": True, "confidence": 0.9,
                                       "reason": "this concerns my function"}))
    api.route("[echo:position]", answer({"position": "migrate in two steps, staging first"}))
    api.route("[echo:vote]", answer({"vote": "approve", "reason": "the plan is sound"}))
    api.route("[echo:decide]", answer({"outcome": "approved", "summary": "migrate in two steps",
                                       "tasks": []}))


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


async def one_workflow(s: Settings, db: Database, mode: str) -> dict[str, Any]:
    settings = s.model_copy(update={"workflow_conversation": mode,
                                    "claude_bin": str(LOCAL_CLAUDE)})
    roles = load_roles(s.agents_dir)
    store = WorkflowStore(db)
    with FakeAnthropic() as api, tempfile.TemporaryDirectory() as home:
        _answers(api)
        env = {**api.env(), "HOME": home}
        deciders = {r: ClaudeDecider(settings, roles[r], env=env, conversations=store)
                    for r in ROLES}
        agents = [WorkflowAgent(settings, db, roles[r], decider=deciders[r], tick=0.05)
                  for r in ROLES]
        async with anyio.create_task_group() as tg:
            for agent in agents:
                await tg.start(agent.run)
            cpu, clock = _cpu(), time.monotonic()
            wf = await store.create(subject="Move the API to the cloud platform",
                                    body="staff and budget impact", started_by="ceo",
                                    roles=list(ROLES), rounds=2, quorum="majority",
                                    decider_timeout=120, phase_timeout=600)
            while True:
                got = await store.get(wf)
                assert got is not None
                if got.phase.final:
                    break
                await anyio.sleep(0.05)
            wall = time.monotonic() - clock
            tg.cancel_scope.cancel()  # the agents stop: their kept processes end
        cpu = _cpu() - cpu  # children count once reaped, so after the kept ones ended
        decision = await store.decision_of(wf)
        assert got.phase == "done" and decision is not None and decision.source == "llm", got
        asked = [r for r in api.message_requests() if "[echo:" in json.dumps(r.last_user_message)]
    later = _later(asked)
    return {"cpu_s": cpu, "wall_s": wall, "runs": sum(d.runs for d in deciders.values()),
            "resumed": sum(d.resumed for d in deciders.values()), "questions": len(asked),
            "requests": len(api.message_requests()),
            "later_messages": statistics.mean(r.messages for r in later),
            "later_bytes": statistics.mean(len(json.dumps(r.body.get("messages")))
                                           for r in later),
            "later_max_messages": max(r.messages for r in later),
            "later_body_bytes": statistics.mean(len(json.dumps(r.body)) for r in later)}


def _later(asked: list[Request]) -> list[Request]:
    """Every question but each role's first (its self-selection)."""
    return [r for r in asked if "[echo:select]" not in json.dumps(r.last_user_message)]


async def main() -> None:
    if not os.access(LOCAL_CLAUDE, os.X_OK):
        print(json.dumps({"bench": "conversations", "skipped": f"no CLI at {LOCAL_CLAUDE}"}))
        return
    async with bench_settings("conversations", redis=False, poll_interval=0.05) as s:
        db = await Database.open(s.database, max_size=6)
        try:
            await one_workflow(s, db, "kept")  # warm-up (first CLI start, caches)
            seen: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
            for _ in range(RUNS):
                for mode in MODES:
                    seen[mode].append(await one_workflow(s, db, mode))
        finally:
            await db.close()

    def median(mode: str, key: str) -> float:
        return float(statistics.median(run[key] for run in seen[mode]))

    base = {k: median("off", k) for k in seen["off"][0]}
    for mode in ("resumed", "kept"):
        got = {k: median(mode, k) for k in seen[mode][0]}
        emit("conversations", f"cpu_s_{mode}", got["cpu_s"],
             baseline="a fresh CLI process per question (CPU s of the CLI children, one "
                      "workflow)", baseline_value=base["cpu_s"], runs=RUNS,
             questions=got["questions"], cli_runs=got["runs"], baseline_cli_runs=base["runs"],
             resumed=got["resumed"])
        emit("conversations", f"wall_s_{mode}", got["wall_s"],
             baseline="a fresh CLI process per question (s, creation to done)",
             baseline_value=base["wall_s"], runs=RUNS)
        emit("conversations", f"later_request_messages_{mode}", got["later_messages"],
             baseline="a fresh conversation per question (messages per later request)",
             baseline_value=base["later_messages"], max_messages=got["later_max_messages"],
             requests=got["requests"], baseline_requests=base["requests"])
        emit("conversations", f"later_request_tokens_{mode}", got["later_bytes"] / 4,
             baseline="a fresh conversation per question (approx. tokens of messages per "
                      "later request, 4 bytes a token)",
             baseline_value=base["later_bytes"] / 4,
             whole_request_tokens=round(got["later_body_bytes"] / 4),
             baseline_whole_request_tokens=round(base["later_body_bytes"] / 4))


if __name__ == "__main__":
    anyio.run(main)
