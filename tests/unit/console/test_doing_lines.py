"""The dashboard's "doing now": one line per agent, the latest event of its running
Claude tasks, and what the hub sends when (and only when) that changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from echo.config import Settings
from echo.console.events import EventHub, doing_lines
from tests.unit.console.test_hub_status import received


def row(task_id: int, role: str | None, at: str, line: str) -> dict[str, Any]:
    return {"task_id": task_id, "role": role, "attempt": 1, "kind": "tool_use", "turn": 2,
            "cost_usd": 0.1, "summary": line.split(": ", 1)[1], "line": line, "at": at}


def test_one_line_per_agent_its_latest_event_and_how_many_tasks() -> None:
    lines = doing_lines([
        row(1, "cto", "2026-12-02T10:00:01+00:00", "cto: Read a.py, turn 2, $0.10"),
        row(2, "cto", "2026-12-02T10:00:03+00:00", "cto: Edit b.py, turn 2, $0.10"),
        row(3, None, "2026-12-02T10:00:02+00:00", "task 3: Bash ls, turn 2, $0.10"),
        row(4, "ceo", "2026-12-02T09:59:00+00:00", "ceo: Write plan.md, turn 2, $0.10"),
    ])["agents"]
    assert [(a["agent"], a["task_id"], a["line"], a["tasks"]) for a in lines] == [
        ("ceo", 4, "ceo: Write plan.md, turn 2, $0.10", 1),
        ("cto", 2, "cto: Edit b.py, turn 2, $0.10", 2),
        ("task 3", 3, "task 3: Bash ls, turn 2, $0.10", 1)]
    assert doing_lines([]) == {"agents": []}


class ScriptedDoing:
    def __init__(self, *answers: list[dict[str, Any]]) -> None:
        self.answers = list(answers)

    async def doing_now(self) -> list[dict[str, Any]]:
        return self.answers.pop(0)


async def test_the_hub_sends_doing_only_when_it_changed(tmp_path: Path) -> None:
    first = [row(1, "cto", "2026-12-02T10:00:01+00:00", "cto: Read a.py, turn 2, $0.10")]
    then = [row(1, "cto", "2026-12-02T10:00:04+00:00", "cto: Edit a.py, turn 3, $0.20")]
    data = ScriptedDoing(first, first, then, [])
    hub = EventHub(Settings(state_dir=tmp_path), None, data)  # type: ignore[arg-type]
    with hub.subscribe() as inbox:
        for _ in range(4):
            await hub.refresh_doing()
        frames = []
        while (item := inbox.receive_nowait() if inbox.statistics().current_buffer_used else None):
            frames.append(item)
    sent = received(frames)
    assert [name for name, _ in sent] == ["doing", "doing", "doing"]
    assert [[a["line"] for a in d["agents"]] for _, d in sent] == [
        ["cto: Read a.py, turn 2, $0.10"], ["cto: Edit a.py, turn 3, $0.20"], []]
