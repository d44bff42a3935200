"""The watchdog: a Claude run read line by line, and stopped when it stops making sense.

`run_streaming` starts the CLI the way `run_process` starts any child (own process
group, death signal, stdin written and closed, the group killed on every way out)
and reads its stream-json stdout as it comes. It ends the run itself when:

- no line arrives for `idle_timeout` seconds (`hung`): when the API goes silent
  mid-turn the CLI prints nothing more and never exits;
- the `result` line came but the process does not exit within `result_grace`
  (`lingered`): the run is counted by its result, success stays success;
- the same tool call arrives `loop_repeats` times in a row (`loop`);
- the task's wall-clock `time_limit` passes (`timed_out`, as before).

Each stopping is the process group's TERM then KILL (`echo.work.process.stop_group`).
Every parsed `RunEvent` goes to `on_event` (synchronous, must not block: the recorder
queues it). stdout is not kept: the `result` line is (as `ProcessResult.stdout`, so the
classification of `echo.work.claude_outcome` reads it as it read the json format).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import Process

from echo.work.process import (
    MAX_OUTPUT,
    ProcessResult,
    drain_into,
    feed_stdin,
    open_child,
    signal_group,
    stop_group,
)
from echo.work.runs.stream import RunEvent, StreamState

#: The longest stdout line kept for parsing; a longer one (a huge tool result) is skipped.
MAX_LINE = MAX_OUTPUT


@dataclass(frozen=True)
class Watch:
    """The watchdog's limits (settings `claude_idle_timeout`, `claude_result_grace`,
    `claude_loop_repeats`; a role's [claude] idle_timeout overrides the first)."""

    idle_timeout: float = 300.0
    result_grace: float = 5.0
    loop_repeats: int = 5


@dataclass(frozen=True)
class Streamed:
    """How a streamed run ended: `stopped` is None (it exited), `hung`, `lingered`,
    `loop` or `timed_out`; `state` is what its stream said."""

    done: ProcessResult
    state: StreamState
    stopped: str | None


async def _read(process: Process, state: StreamState, watch: Watch,
                on_event: Callable[[RunEvent], None]) -> str | None:
    """Feed stdout lines to `state` until EOF (None) or a reason to stop the run."""
    assert process.stdout is not None
    pending = b""
    while True:
        wait = watch.result_grace if state.result is not None else watch.idle_timeout
        chunk: bytes | None = None
        with anyio.move_on_after(wait) as idle:
            with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError,
                                     anyio.BrokenResourceError):
                chunk = await process.stdout.receive()
        if idle.cancelled_caught:
            return "lingered" if state.result is not None else "hung"
        if chunk is None:
            lines = [pending] if pending.strip() else []
        else:
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) > MAX_LINE:
                pending = b""
        for line in lines:
            if line.strip():
                for event in state.feed(line):
                    on_event(event)
            if state.looping is not None:
                return "loop"
        if chunk is None:
            return None


async def _orphans_die_with_the_cli(process: Process) -> None:
    """Once the CLI has exited, kill what it left in its group: an orphan holding the
    stdout pipe would otherwise keep the stream open, and a CLI that died by a signal
    would read as silent until the idle timeout. What the CLI wrote before it died is
    still in the pipe and is read to the end."""
    await process.wait()
    signal_group(process.pid, signal.SIGKILL)


async def run_streaming(
    argv: Sequence[str],
    *,
    stdin: bytes | None,
    env: Mapping[str, str] | None,
    cwd: str | Path | None,
    time_limit: float,
    kill_grace: float,
    watch: Watch,
    on_event: Callable[[RunEvent], None],
) -> Streamed:
    """Run the CLI, reading its stream; `OSError` if it cannot be started."""
    started = time.monotonic()
    state = StreamState(loop_repeats=watch.loop_repeats)
    stderr = bytearray()
    stopped: str | None = None
    process = await open_child(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=cwd,
                               env=dict(env) if env is not None else None,
                               start_new_session=True)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drain_into, process.stderr, stderr)
            tg.start_soon(feed_stdin, process, stdin)
            tg.start_soon(_orphans_die_with_the_cli, process)
            with anyio.move_on_after(time_limit) as wall:
                stopped = await _read(process, state, watch, on_event)
                if stopped is None:  # stdout closed: the exit follows, or it hangs there
                    with anyio.move_on_after(watch.result_grace if state.result is not None
                                             else watch.idle_timeout) as exiting:
                        await process.wait()
                    if exiting.cancelled_caught:
                        stopped = "lingered" if state.result is not None else "hung"
            if wall.cancelled_caught:
                stopped = "timed_out"
            if stopped is not None:
                await stop_group(process, kill_grace)
            # As `run_process`: what the CLI left in its group would hold the pipes open.
            signal_group(process.pid, signal.SIGKILL)
            tg.cancel_scope.deadline = anyio.current_time() + 1.0
    finally:
        if process.returncode is None:
            with anyio.CancelScope(shield=True):
                await stop_group(process, kill_grace)
        with anyio.CancelScope(shield=True):
            await process.aclose()
    assert process.returncode is not None
    stdout = json.dumps(state.result).encode() if state.result is not None else b""
    # A run that lingered after its result is counted by that result.
    returncode = 0 if stopped == "lingered" and not (state.result or {}).get("is_error") \
        else process.returncode
    done = ProcessResult(returncode, stdout, bytes(stderr), time.monotonic() - started,
                         stopped == "timed_out")
    return Streamed(done, state, stopped)
