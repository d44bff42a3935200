"""The Jepsen workload: what the client host asks of the organisation, and its record.

    ip netns exec ej..-client python -m tests.jepsen.workload HISTORY RUNFILE SECONDS SEED ROLES

Through `echo.org.client.Client` (what `echoctl` calls), at a steady, bounded rate
(about three operations a second): broadcasts, direct messages to one role, tasks
for a role and for any worker (each a command task, `attempt.sh`, that records when
it ran), and a workflow every 20 s. Each operation is written to the history (JSON
lines) as `invoke` before it is sent and `ok` (with the id the organisation gave it),
`fail` (refused: the client was told, nothing was promised) or `info` (unknown: a
timeout after sending) once it returns, each with the client's wall time.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from echo.config import Settings
from echo.errors import EchoError
from echo.org.client import Client

ATTEMPT = Path(__file__).with_name("attempt.sh")
TICK = 1.0
OP_TIMEOUT = 10.0


class History:
    """Appends one JSON object a line, flushed at once (the run may be killed)."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 - open for the whole run

    def write(self, **event: Any) -> None:
        self.file.write(json.dumps({"t": round(time.time(), 4), **event}) + "\n")

    def close(self) -> None:
        self.file.close()


async def _op(client: Client, history: History, n: int, kind: str, roles: list[str],
              rng: random.Random, runfile: Path) -> None:
    to = rng.choice(roles)
    history.write(type="invoke", op=kind, n=n, **({"to": to} if kind in ("direct", "role-task") else {}))
    try:
        with anyio.fail_after(OP_TIMEOUT):
            if kind == "broadcast":
                sent = await client.broadcast(f"jepsen {n}", f"broadcast {n}")
                history.write(type="ok", op=kind, n=n, id=sent.db_id, to="all")
            elif kind == "direct":
                sent = await client.broadcast(f"jepsen {n}", f"direct {n}", to=to, kind="direct")
                history.write(type="ok", op=kind, n=n, id=sent.db_id, to=to)
            elif kind in ("role-task", "task"):
                role = to if kind == "role-task" else None
                made = await client.submit_task(
                    f"jepsen task {n}", role=role, task_type="command", timeout_seconds=30,
                    max_retries=10, payload={"argv": ["/bin/sh", str(ATTEMPT), str(runfile)]})
                history.write(type="ok", op=kind, n=n, id=made.task_id, to=role)
            else:
                wf = await client.start_workflow(f"jepsen decision {n}", body="Budget: 2 weeks",
                                                 rounds=1, decider_timeout=5, phase_timeout=20)
                history.write(type="ok", op=kind, n=n, id=wf.id)
    except TimeoutError:
        history.write(type="info", op=kind, n=n, error=f"no answer within {OP_TIMEOUT}s")
    except (EchoError, OSError) as exc:
        history.write(type="fail", op=kind, n=n, error=str(exc).splitlines()[0][:200])


async def main(history_path: Path, runfile: Path, seconds: float, seed: int, roles: list[str]) -> None:
    rng = random.Random(seed)
    history = History(history_path)
    settings = Settings()
    try:
        async with Client(settings) as client:
            await client.open_publisher()  # in this task: its task group must close here too
            await _load(client, history, seconds, rng, roles, runfile)
    finally:
        history.write(type="workload-end")
        history.close()


async def _load(client: Client, history: History, seconds: float, rng: random.Random,
                roles: list[str], runfile: Path) -> None:
    n = 0
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        next_workflow = started + 10
        while time.monotonic() - started < seconds:
            tick = time.monotonic()
            kinds = ["broadcast", "direct", rng.choice(["role-task", "task"])]
            if tick >= next_workflow:
                kinds.append("workflow")
                next_workflow = tick + 20
            for kind in kinds:
                n += 1
                tg.start_soon(_op, client, history, n, kind, roles, rng, runfile)
            await anyio.sleep(max(0.0, TICK - (time.monotonic() - tick)))  # the load's pace


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]),
              sys.argv[5].split(","))
