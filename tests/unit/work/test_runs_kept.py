"""A kept CLI process (echo.work.runs.kept) against a small script that speaks the
CLI's stream-json input and output: several answers from one process, each with its
own cost though the CLI's total adds up; a question it goes silent on ends the process
(`hung`) and the next starts a new one; one that exits says why from its stderr."""

from __future__ import annotations

import sys

import pytest

from echo.work.runs import RunEvent, Watch
from echo.work.runs.kept import KeptSession

pytestmark = pytest.mark.anyio

# Answers each user line with init, an assistant message, and a result whose
# total_cost_usd is the running total (as the CLI's is); "hang" gets no answer, "die"
# ends the process with a line on stderr.
SCRIPT = r"""
import json, os, sys
total = 0.0
for n, line in enumerate(sys.stdin, 1):
    asked = json.loads(line)["message"]["content"]
    if asked == "hang":
        continue
    if asked == "die":
        sys.stderr.write("No conversation found with session ID: s-1\n")
        sys.exit(1)
    total += 0.25
    for out in ({"type": "system", "subtype": "init", "session_id": "s-1"},
                {"type": "assistant", "message": {"id": f"m{n}", "content": [
                    {"type": "text", "text": "answer to " + asked}]}},
                {"type": "result", "subtype": "success", "is_error": False, "num_turns": 1,
                 "result": f"{os.getpid()}:{asked}", "session_id": "s-1",
                 "total_cost_usd": total}):
        print(json.dumps(out), flush=True)
"""
WATCH = Watch(idle_timeout=1.0)


def kept() -> KeptSession:
    return KeptSession([sys.executable, "-c", SCRIPT], env={}, cwd=None, kill_grace=1.0)


async def test_one_process_answers_every_question_each_with_its_own_cost() -> None:
    session, events = kept(), list[RunEvent]()
    answers = []
    for question in ("select", "position", "vote"):
        streamed = await session.ask(question, time_limit=30, watch=WATCH,
                                     on_event=events.append)
        assert streamed.stopped is None and streamed.done.returncode == 0
        assert streamed.state.result is not None
        answers.append(streamed.state.result)
    pids = {a["result"].split(":")[0] for a in answers}
    assert len(pids) == 1 and session.alive and session.questions == 3
    assert [a["result"].split(":")[1] for a in answers] == ["select", "position", "vote"]
    assert [a["total_cost_usd"] for a in answers] == [0.25, 0.25, 0.25]  # not 0.25, 0.5, 0.75
    assert [e.kind for e in events].count("init") == 3
    await session.close()
    assert not session.alive


async def test_a_silent_question_ends_the_process_and_the_next_starts_another() -> None:
    session = kept()
    first = await session.ask("select", time_limit=30, watch=WATCH, on_event=lambda e: None)
    silent = await session.ask("hang", time_limit=30, watch=WATCH, on_event=lambda e: None)
    assert silent.stopped == "hung" and not session.alive
    after = await session.ask("vote", time_limit=30, watch=WATCH, on_event=lambda e: None)
    assert first.state.result is not None and after.state.result is not None
    assert first.state.result["result"].split(":")[0] != after.state.result["result"].split(":")[0]
    await session.close()


async def test_an_exit_without_a_result_says_why_from_stderr() -> None:
    session = kept()
    died = await session.ask("die", time_limit=30, watch=WATCH, on_event=lambda e: None)
    assert died.stopped is None and died.state.result is None and died.done.returncode == 1
    assert b"No conversation found" in died.done.stderr and not session.alive
