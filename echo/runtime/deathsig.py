"""Children that die with their parent: PR_SET_PDEATHSIG on Linux, a pipe elsewhere.

Two mechanisms, because each has a gap:

- `die_with_parent(pid)` is a `preexec_fn` for Linux: the kernel sends the child
  SIGKILL when the *thread* that forked it ends (a caveat: with asyncio that is the
  thread running the event loop, which for a supervisor is the process's life). If
  the parent died before prctl took effect the signal would never come, so the child
  then ends itself instead of running unsupervised.
- `parent_pipe()` gives the child the read end of a pipe whose write end only the
  parent holds; when the parent dies, for whatever reason and on any platform, the
  kernel closes it and the child reads EOF (`watch_parent`), and exits.

`OSProcess(die_with_parent=True)` uses both for the agents of `echoctl up`. The work
queue's children (`claude` runs, `command` tasks) get the same death signal from
util-linux's `setpriv --pdeathsig KILL` (echo.work.process), as anyio's `open_process`
takes no `preexec_fn`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

import anyio

__all__ = ["PARENT_FD_ENV", "die_with_parent", "parent_pipe", "watch_parent"]

_PR_SET_PDEATHSIG = 1

#: The environment variable that tells a child the fd of its parent pipe.
PARENT_FD_ENV = "ECHO_PARENT_FD"


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_prctl = _load_prctl()


def die_with_parent(parent: int) -> Callable[[], None] | None:
    """A `preexec_fn` (Linux only, else None): SIGKILL this child when the thread that
    forked it dies. It runs in the child between fork and exec, so it only calls prctl
    and getppid."""
    prctl = _prctl
    if prctl is None:
        return None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return hook


def parent_pipe() -> tuple[int, int]:
    """(read end for the child, write end the parent keeps). The read end is
    inheritable; pass it in `pass_fds` and close it in the parent after the spawn. The
    write end is not inheritable, so no other child keeps the pipe open."""
    read, write = os.pipe()
    os.set_inheritable(read, True)
    return read, write


async def watch_parent(fd: int) -> None:
    """Return when the parent holding the pipe's write end is gone (EOF on `fd`)."""
    while True:
        await anyio.wait_readable(fd)
        try:
            if not os.read(fd, 4096):
                return
        except BlockingIOError:
            continue
        except OSError:
            return
