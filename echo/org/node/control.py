"""The running organisation's control socket: `restart` and `down` from another terminal.

A Unix socket in the private state directory (mode 0600), one JSON request per
connection and one JSON answer. A restart asked for by a person goes through the
supervisor's own `terminate_child` / `restart_child`, so it is not counted as a
crash against the restart intensity.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any

import anyio
from anyio.abc import SocketStream, TaskStatus

from echo.config import Settings
from echo.errors import EchoError, UnknownRole
from echo.org.node.state import control_socket

log = logging.getLogger(__name__)


class ControlUnavailable(EchoError):
    """No organisation answers on the control socket."""


async def serve(
    settings: Settings,
    org: Any,
    stop: anyio.Event,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Answer control requests for `org` (an Organisation) until cancelled."""
    path = control_socket(settings)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = await anyio.create_unix_listener(path)
    os.chmod(path, 0o600)

    async def handle(stream: SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(30):
                    raw = await stream.receive(65536)
                    request = json.loads(raw.decode())
                    answer = await _answer(org, stop, request)
            except (ValueError, UnicodeDecodeError):
                answer = {"ok": False, "error": "request is not JSON"}
            except EchoError as exc:
                answer = {"ok": False, "error": str(exc)}
            except TimeoutError:
                answer = {"ok": False, "error": "timed out"}
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.send(json.dumps(answer).encode())

    try:
        async with listener:
            task_status.started()
            await listener.serve(handle)
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def _answer(org: Any, stop: anyio.Event, request: dict[str, Any]) -> dict[str, Any]:
    command = request.get("command")
    if command == "down":
        stop.set()
        return {"ok": True}
    if command == "restart":
        role = request.get("role")
        if role not in org.record.agents:
            raise UnknownRole(f"unknown role {role!r}; running: {', '.join(org.record.agents)}")
        org.asked_restarts.add(role)  # not a crash: the restart count stays
        await org.supervisor.terminate_child(role)
        await org.supervisor.restart_child(role)
        rec = org.record.agents[role]
        return {"ok": True, "role": role, "pid": rec.pid}
    return {"ok": False, "error": f"unknown command {command!r}"}


async def request(settings: Settings, payload: dict[str, Any], within: float = 60) -> dict[str, Any]:
    """Send one request to the running organisation and return its answer."""
    path = control_socket(settings)
    try:
        with anyio.fail_after(within):
            stream = await anyio.connect_unix(path)
            async with stream:
                await stream.send(json.dumps(payload).encode())
                chunks = []
                with contextlib.suppress(anyio.EndOfStream):
                    while True:
                        chunks.append(await stream.receive())
    except (OSError, TimeoutError) as exc:
        raise ControlUnavailable(
            f"no organisation answers at {path} ({exc}); start one with `echoctl up`"
        ) from None
    answer: dict[str, Any] = json.loads(b"".join(chunks).decode())
    if not answer.get("ok"):
        raise EchoError(str(answer.get("error", "the organisation refused the request")))
    return answer
