"""Test children shared by the runtime tests: they record what happens to them."""

from __future__ import annotations

import contextlib
from typing import Any

import anyio

from echo.runtime import Actor, ActorExit, ExitReason


class Crash(Exception):
    """The error test children raise on purpose."""


class Probe(Actor):
    """An actor that logs its lifecycle to a shared list and misbehaves on request.

    call(exc) raises exc; call(("stop", r)) stops itself with r after replying;
    cast(exc) raises exc; infos land in `inbox`.
    """

    def __init__(
        self,
        label: str = "probe",
        log: list[Any] | None = None,
        *,
        fail_init: BaseException | None = None,
        hang_terminate: bool = False,
        trap: bool = False,
    ) -> None:
        super().__init__(name=label)
        self.label = label
        self.log: list[Any] = log if log is not None else []
        self.fail_init = fail_init
        self.hang_terminate = hang_terminate
        self.trap_exits = trap
        self.state = 0
        self._send, self.inbox = anyio.create_memory_object_stream[Any](100)

    async def init(self) -> None:
        self.log.append(("init", self.label))
        await anyio.sleep(0)  # a real checkpoint, so ordering is not an accident
        if self.fail_init is not None:
            raise self.fail_init
        self.log.append(("ready", self.label))

    async def handle_call(self, request: Any) -> Any:
        if isinstance(request, BaseException):
            raise request
        if isinstance(request, tuple) and request[0] == "stop":
            await self.stop(request[1])
            return "stopping"
        if request == "get":
            return self.state
        if isinstance(request, tuple) and request[0] == "wait":
            await request[1].wait()
            return "waited"
        return ("echo", request)

    async def handle_cast(self, message: Any) -> None:
        if isinstance(message, BaseException):
            raise message
        self.state += message

    async def handle_info(self, message: Any) -> None:
        self._send.send_nowait(message)

    async def terminate(self, reason: ExitReason) -> None:
        self.log.append(("terminate", self.label, reason))
        if self.hang_terminate:
            await anyio.Event().wait()

    async def next_info(self, timeout: float = 2.0) -> Any:
        with anyio.fail_after(timeout):
            return await self.inbox.receive()


async def crash(actor: Actor, error: BaseException | None = None) -> None:
    """Crash ``actor`` through a call and wait until it has exited."""
    with contextlib.suppress(ActorExit):
        await actor.call(error or Crash("boom"))
    await actor.wait()
