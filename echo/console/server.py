"""Running the console: uvicorn inside an anyio program, as a service or a process.

`serve(...)` binds the socket itself (so a port in use is one clear line, not a
server log), starts uvicorn on it, reports started (`task_status`) once it accepts
connections, and stops gracefully when cancelled. `python -m echo.console` runs it
as the organisation's supervised child; `echoctl serve` runs it alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import anyio
import uvicorn
from anyio.abc import TaskStatus

from echo.config import Settings
from echo.console import auth
from echo.console.app import create_app
from echo.errors import ConfigError, UsageError
from echo.org.console_address import Listening, url, write_listening

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0: any free port); a failure is one `UsageError`."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(
            f"cannot use console host {host!r} ({exc}); give --console-host an address"
        ) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"the console cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "choose another with --console-port (or --no-console)"
        ) from None
    return sock


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
    sock = bind(host, port)
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
