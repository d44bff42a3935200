"""The node's children as its supervisor sees them: how they start and how their end reads.

An agent's (or the console's) OS process reports its readiness to the organisation's
record (`AgentProcess`); a stagger delay is a temporary child that is started after
its delay (`Pause`). When one exits, the record says why as a person reads it: a
signal by name, a status by number, and the last error line of its log.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Callable
from typing import Any

import anyio

from echo.runtime import NORMAL, OSProcess, Process, ProcessExited


class AgentProcess(OSProcess):
    """An agent's OS process, reporting its readiness to the organisation's record."""

    def __init__(self, on_ready: Callable[[AgentProcess], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_ready = on_ready

    def _ready(self) -> None:
        super()._ready()
        self._on_ready(self)


class Pause(Process):
    """A temporary child that is 'started' after `delay` seconds: the stagger delay."""

    def __init__(self, delay: float) -> None:
        super().__init__(name="stagger-delay")
        self.delay = delay

    async def _main(self) -> str:
        await anyio.sleep(self.delay)
        self._ready()
        return NORMAL


def last_error_line(path: os.PathLike[str] | str) -> str:
    """The last line of an agent's log that reports an error, if any."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - 16384, 0))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if re.search(r"\b(error|exception|traceback)\b", line, re.IGNORECASE):
            return line.strip()
    return ""


def describe_exit(reason: object) -> str:
    """An exit reason as a person reads it: a signal by name, a status by number."""
    if isinstance(reason, ProcessExited):
        if reason.returncode < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-reason.returncode).name}"
        return f"exit status {reason.returncode}"
    return reason if isinstance(reason, str) else repr(reason)
