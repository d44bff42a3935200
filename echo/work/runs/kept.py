"""A CLI process kept for a conversation: several questions, one start.

`claude -p --input-format stream-json --output-format stream-json --verbose` reads
user messages from its stdin, one JSON line each, and answers each with the usual
stream ending in a `result` line, then waits for the next (checked with 2.1.197:
each answer has its own `system/init` and `usage`, while `total_cost_usd` adds up over
the process; stdin closed, it exits). Starting the CLI costs about a second of CPU,
so a role asked several questions of one workflow keeps one such process.

`KeptSession.ask` writes one question and reads up to its `result` under the limits
of a one-shot run (`Watch`, the question's time limit). Silence past the idle timeout,
the same tool call over and over, the time limit, an error result or an exit end the
process (its group TERM then KILL); the next question starts a new one (resuming the
session: the caller's argv). Each answer's cost is its own (the running total's
difference). The child dies with the agent (death signal), and a closed stdin ends it.

stderr goes to an unlinked temporary file (no task drains a pipe between questions),
whose tail names what went wrong when the CLI exits without a result.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import anyio
from anyio.abc import Process

from echo.work.process import ProcessResult, open_child, signal_group, stop_group
from echo.work.runs.stream import RunEvent, StreamState
from echo.work.runs.watch import MAX_LINE, Streamed, Watch

#: How much of stderr a failure keeps.
STDERR_TAIL = 2000


def user_line(prompt: str) -> bytes:
    """One question as the CLI's stream-json input reads it."""
    return (json.dumps({"type": "user", "message": {"role": "user", "content": prompt}})
            + "\n").encode()


class KeptSession:
    """One kept CLI process; `ask` one question at a time (a lock makes sure)."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | Path | None,
                 kill_grace: float) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.kill_grace = kill_grace
        self.process: Process | None = None
        self.questions = 0  # answered by this process
        self._stderr: IO[bytes] | None = None
        self._pending = b""
        self._total = 0.0  # the process's running total_cost_usd
        self._lock = anyio.Lock()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def ask(self, prompt: str, *, time_limit: float, watch: Watch,
                  on_event: Callable[[RunEvent], None]) -> Streamed:
        """One question's stream, as `run_streaming` reports a one-shot run's; `OSError`
        if the CLI cannot be started."""
        async with self._lock:
            return await self._ask(prompt, time_limit, watch, on_event)

    async def _ask(self, prompt: str, time_limit: float, watch: Watch,
                   on_event: Callable[[RunEvent], None]) -> Streamed:
        started = time.monotonic()
        if self.process is None:
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the process)
            self.process = await open_child(self.argv, stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=self._stderr,
                                            cwd=self.cwd, env=self.env, start_new_session=True)
        process = self.process
        state = StreamState(loop_repeats=watch.loop_repeats)
        stopped: str | None = None
        with anyio.move_on_after(time_limit) as wall:
            assert process.stdin is not None
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError,
                                     OSError):  # it has exited: its stdout says why
                await process.stdin.send(user_line(prompt))
            stopped = await self._read(process, state, watch, on_event)
        if wall.cancelled_caught:
            stopped = "timed_out"
        answered = stopped == "answered" and not (state.result or {}).get("is_error")
        if state.result is not None:
            total = state.result.get("total_cost_usd")
            if isinstance(total, int | float):  # this answer's own cost
                state.result["total_cost_usd"] = round(max(float(total) - self._total, 0.0), 6)
                state.cost_usd = state.result["total_cost_usd"]
                self._total = float(total)
        tail = b""
        if answered:
            self.questions += 1
            returncode = 0
        else:
            await self.close(keep_stderr=True)
            tail = self._tail()
            self._drop_stderr()
            assert process.returncode is not None
            returncode = process.returncode or 1
        stdout = json.dumps(state.result).encode() if state.result is not None else b""
        done = ProcessResult(returncode, stdout, tail, time.monotonic() - started,
                             stopped == "timed_out")
        return Streamed(done, state, stopped if stopped in ("hung", "loop", "timed_out") else None)

    async def _read(self, process: Process, state: StreamState, watch: Watch,
                    on_event: Callable[[RunEvent], None]) -> str | None:
        """Feed stdout lines to `state` until this answer's `result` ("answered"), EOF
        (None), or a reason to stop ("hung", "loop")."""
        assert process.stdout is not None
        while True:
            *lines, rest = self._pending.split(b"\n")
            self._pending = rest if len(rest) <= MAX_LINE else b""
            for i, line in enumerate(lines):
                if line.strip():
                    for event in state.feed(line):
                        on_event(event)
                if state.looping is not None:
                    return "loop"
                if state.result is not None:  # what follows belongs to the next answer
                    self._pending = b"\n".join([*lines[i + 1:], self._pending])
                    return "answered"
            chunk: bytes | None = None
            with anyio.move_on_after(watch.idle_timeout) as idle:
                with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError,
                                         anyio.BrokenResourceError):
                    chunk = await process.stdout.receive()
            if idle.cancelled_caught:
                return "hung"
            if chunk is None:
                if self._pending.strip():
                    for event in state.feed(self._pending):
                        on_event(event)
                    self._pending = b""
                return "answered" if state.result is not None else None
            self._pending += chunk

    def _tail(self) -> bytes:
        if self._stderr is None or self._stderr.closed:
            return b""
        with contextlib.suppress(OSError):
            self._stderr.seek(0, 2)
            size = self._stderr.tell()
            self._stderr.seek(max(size - STDERR_TAIL, 0))
            return self._stderr.read()
        return b""

    async def close(self, *, keep_stderr: bool = False) -> None:
        """End the process: stdin closed (it exits), else its group TERM then KILL."""
        process, self.process = self.process, None
        self._pending, self._total = b"", 0.0
        if process is None:
            return
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                if process.stdin is not None:
                    with contextlib.suppress(anyio.BrokenResourceError,
                                             anyio.ClosedResourceError, OSError):
                        await process.stdin.aclose()
                with anyio.move_on_after(self.kill_grace):
                    await process.wait()
                if process.returncode is None:
                    await stop_group(process, self.kill_grace)
            signal_group(process.pid, signal.SIGKILL)  # what it left in its group
            await process.aclose()
        if not keep_stderr:
            self._drop_stderr()

    def _drop_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
