"""Running the console: uvicorn inside an anyio program, as a service or a process.

`serve(...)` binds the socket itself (so a port in use is one clear line, not a
server log), starts uvicorn on it, reports started (`task_status`) once it accepts
connections, and stops gracefully when cancelled. `python -m echo.console` runs it
as the organisation's supervised child; `echoctl serve` runs it alone.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import uvicorn
from anyio.abc import TaskStatus

from echo.config import Settings
from echo.console import auth
from echo.console.app import create_app
from echo.errors import ConfigError, PortTaken, UsageError
from echo.org.console_address import Listening, url, write_listening

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


@dataclass(frozen=True)
class Flags:
    """The options that move the console, as the command that started it spells them:
    a message about a taken port names the option the user can actually give."""

    host: str
    port: str
    off: str | None = None  # the option that does without a console, if there is one

    def hint(self, option: str) -> str:
        return f"choose another with {option}" + (f", or {self.off}" if self.off else "")


#: `echoctl up` (and `python -m echo.console`, which up runs as its child).
UP_FLAGS = Flags("--console-host", "--console-port", "--no-console")
#: `echoctl serve`.
SERVE_FLAGS = Flags("--host", "--port")


def bind(host: str, port: int, flags: Flags = UP_FLAGS) -> socket.socket:
    """A listening socket on host:port (0: any free port). A port another program holds
    is `PortTaken` (exit 1); an address that cannot be used at all (a host not on this
    machine, a port below 1024 without the right) is a `UsageError` (exit 2)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(
            f"cannot use console host {host!r} ({exc.strerror or exc}); give {flags.host} an address"
        ) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        shown = f"[{host}]" if ":" in host else host
        where = f"the console cannot listen on {shown}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise PortTaken(
                f"{where}: the port is taken by another program; {flags.hint(flags.port)}") from None
        option = flags.host if exc.errno == errno.EADDRNOTAVAIL else flags.port  # not this machine's
        raise UsageError(f"{where} ({exc.strerror or exc}); {flags.hint(option)}") from None
    return sock


def check_free(host: str, port: int, flags: Flags = UP_FLAGS) -> None:
    """Refuse now, before anything starts, if the console could not listen there."""
    if port:
        bind(host, port, flags).close()


class _Server(uvicorn.Server):
    """uvicorn whose signals belong to the program around it."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


async def serve(
    settings: Settings,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    status_interval: float = 1.0,
    flags: Flags = UP_FLAGS,
    task_status: TaskStatus[Listening] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the console until cancelled; reports started with where it listens."""
    if bool(tls_cert) != bool(tls_key):
        raise UsageError("give both --tls-cert and --tls-key, or neither")
    tls = bool(tls_cert)
    warning = auth.exposure_warning(host, tls)
    if warning:
        log.warning("%s", warning)
    token = auth.load_or_create_token(settings)
    sock = bind(host, port, flags)
    bound = sock.getsockname()[1]
    app = create_app(settings, host=host, token=token, status_interval=status_interval)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2,
        ssl_certfile=tls_cert, ssl_keyfile=tls_key, proxy_headers=False,
    )
    server = _Server(config)
    stopped = anyio.Event()

    async def run_server() -> None:
        # Stopped by should_exit (graceful), not by cancellation: see the finally below.
        with anyio.CancelScope(shield=True):
            try:
                await server.serve(sockets=[sock])
            finally:
                stopped.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_server)
        try:
            with anyio.fail_after(60):
                await server.ready.wait()
            here = Listening(url(host, bound, tls), host, bound, os.getpid(), tls)
            write_listening(settings, here)
            task_status.started(here)
            await stopped.wait()
        finally:
            server.should_exit = True
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await stopped.wait()
            server.force_exit = True
            with contextlib.suppress(OSError):
                sock.close()


async def serve_until_signalled(
    settings: Settings, on_ready: Callable[[Listening], None], **options: Any
) -> None:
    """`serve` until SIGTERM or SIGINT, then stop gracefully: the console as a program."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:
            here = await tg.start(partial(serve, settings, **options))
            on_ready(here)
            async for _ in signals:
                tg.cancel_scope.cancel()
                return
