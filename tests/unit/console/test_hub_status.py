"""What the event hub tells browsers after each status poll: the whole status when
something a person sees changed, the heartbeats when only they moved, else nothing.

A scripted in-memory status source stands in for the organisation; the frames are
what every client's queue receives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio

from echo.config import Settings
from echo.console.events import EventHub


class ScriptedStatus:
    """The console's data seam, answering `status` from a list."""

    def __init__(self, *statuses: dict[str, Any]) -> None:
        self.statuses = list(statuses)

    async def status(self, *, remote: bool = True) -> dict[str, Any]:
        return self.statuses.pop(0)


def status(beat: str, age: float, state: str = "healthy") -> dict[str, Any]:
    return {"organisation": {"state": "running"},
            "agents": [{"role": "cto", "pid": 7, "state": state, "restarts": 0,
                        "last_heartbeat": beat, "heartbeat_age": age}]}


def received(frames: list[tuple[int | None, bytes]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for _, raw in frames:
        fields = dict(line.split(": ", 1) for line in raw.decode().strip().splitlines())
        out.append((fields["event"], json.loads(fields["data"])))
    return out


async def test_each_poll_sends_what_changed(tmp_path: Path) -> None:
    data = ScriptedStatus(
        status("12:00:00", 0.2),
        status("12:00:01", 0.3),  # only the heartbeat moved
        status("12:00:01", 1.3),  # nothing moved (its beats stopped): the page ages it itself
        status("12:00:01", 6.0, state="unresponsive"),  # what a person sees changed
    )
    hub = EventHub(Settings(state_dir=tmp_path), None, data)  # type: ignore[arg-type]
    with hub.subscribe() as inbox:
        for _ in range(4):
            await hub.refresh_status()
        frames = []
        while True:
            try:
                frames.append(inbox.receive_nowait())
            except anyio.WouldBlock:
                break
    got = received(frames)
    assert [name for name, _ in got] == ["agents", "heartbeats", "agents"]
    assert got[1][1] == {"agents": [{"role": "cto", "last_heartbeat": "12:00:01", "heartbeat_age": 0.3}]}
    assert got[2][1]["agents"][0]["state"] == "unresponsive"
