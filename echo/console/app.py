"""The console's ASGI app: routes, auth, errors, and what it holds while it runs.

`create_app(settings, host=...)` builds a FastAPI app whose lifespan opens one
small pool, one publisher and the `EventHub` (one LISTEN connection). The console
starts with the database down and says so (`/health` answers 503 and the API's
database calls answer 503) instead of failing: it recovers by itself, like an agent.
"""

from __future__ import annotations

import contextlib
import html
import logging
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import anyio
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from echo import db
from echo.config import Settings
from echo.console import auth
from echo.console.api import Conflict, router
from echo.console.data import ConsoleData
from echo.console.events import EventHub
from echo.console.metrics import CONTENT_TYPE, Metrics
from echo.errors import AlreadyDecided, EchoError, NotFound, StoreUnavailable, UsageError
from echo.mcp import Scope as MCPScope
from echo.mcp import build_server
from echo.org.client import Client
from echo.org.client_base import NoAgentsUp
from echo.org.node.control import ControlUnavailable

log = logging.getLogger(__name__)

STATIC = resources.files("echo.console") / "static"
#: Where the console serves the `echo` MCP server (streamable HTTP).
MCP_PATH = "/mcp"

_STATUS: list[tuple[type[EchoError], int]] = [
    (Conflict, 409), (NotFound, 404), (UsageError, 400),
    (StoreUnavailable, 503), (ControlUnavailable, 503), (NoAgentsUp, 409),
    (AlreadyDecided, 409),
]


def status_of(exc: EchoError) -> int:
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            return code
    return 500


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


def create_app(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    token: str | None = None,
    status_interval: float = 1.0,
) -> FastAPI:
    """The console for the organisation `settings` names, listening on `host`."""
    secret = token or auth.load_or_create_token(settings)
    metrics_open = auth.is_loopback(host)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db.set_application_name(f"echo-console:{settings.namespace}")
        database = await db.Database.open(settings.database, min_size=0, max_size=4)
        try:
            async with Client(settings, database=database) as client:
                # Opened here, before the task group it must outlive, not in a request's task.
                await client.open_publisher()
                data = ConsoleData(settings, client)
                hub = EventHub(settings, database, data, status_interval=status_interval)
                metrics = Metrics()
                hub.observers.append(metrics.observe)
                app.state.data, app.state.hub, app.state.metrics = data, hub, metrics
                app.state.client = client
                # The MCP sessions' task group lives here, inside the client it calls.
                async with anyio.create_task_group() as tg, mcp_server.session_manager.run():
                    await tg.start(hub.run)
                    yield
                    tg.cancel_scope.cancel()
        finally:
            await database.close()

    app = FastAPI(
        title="ECHO console",
        version="1",
        description="The organisation's HTTP API. Send `Authorization: Bearer <token>`; "
        "the token is in console.token in the state directory (`echoctl up` prints where).",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.token = secret
    app.include_router(router)
    # The `echo` MCP server (operator scope) over streamable HTTP at /mcp, behind the
    # token like the API; its tools call the client the lifespan opens.
    mcp_server = build_server(settings, MCPScope(), lambda: app.state.client)
    app.router.routes.extend(mcp_server.streamable_http_app(streamable_http_path=MCP_PATH, host=host).routes)

    app.add_middleware(TokenGuard, token=secret, metrics_open=metrics_open,
                       token_file=str(auth.token_path(settings)))

    @app.exception_handler(EchoError)
    async def echo_error(_request: Request, exc: EchoError) -> JSONResponse:
        code = status_of(exc)
        if code == 500:
            log.error("console request failed: %s", exc)
        return error(code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
        return error(400, f"bad {where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.get("/health", include_in_schema=False)
    async def health(request: Request) -> JSONResponse:
        return await _health(request.app)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        hub: EventHub = request.app.state.hub
        data: ConsoleData = request.app.state.data
        snapshot: dict[str, Any] = {"agents": (hub.status or {}).get("agents", [])}
        try:
            snapshot["tasks"] = await data.task_counts()
            snapshot["messages"] = await data.message_count()
            snapshot["spend"] = await data.spend()
            snapshot["database_ok"] = True
        except StoreUnavailable:
            snapshot["database_ok"] = False
        body = request.app.state.metrics.render(snapshot, hub.clients)
        return Response(body, media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(), headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app


class TokenGuard:
    """Lets a request through only with the token (see `echo.console.auth`).

    Plain ASGI rather than `@app.middleware("http")`: that wrapper would copy every
    chunk of every event stream through an extra task and queue.
    """

    def __init__(self, app: ASGIApp, *, token: str, metrics_open: bool, token_file: str) -> None:
        self.app = app
        self.token = token
        self.metrics_open = metrics_open
        self.token_file = token_file  # where to read the token: the path, never the token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path = request.url.path
        if path == "/health" or (path == "/metrics" and self.metrics_open):
            await self.app(scope, receive, send)
            return
        given = auth.bearer(request.headers.get("authorization")) or request.cookies.get(auth.COOKIE)
        if auth.matches(given, self.token):
            await self.app(scope, receive, send)
            return
        query_token = request.query_params.get("token")
        response: Response
        if (auth.matches(query_token, self.token) and request.method == "GET"
                and not path.startswith("/api/") and path != MCP_PATH):
            # Once: the cookie from now on, and the token out of the address bar.
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            response = RedirectResponse(path + ("?" + urlencode(rest) if rest else ""), status_code=303)
            response.set_cookie(auth.COOKIE, self.token, httponly=True, samesite="strict",
                                secure=request.url.scheme == "https", path="/")
        else:
            reason = "wrong token" if (given or query_token) else "no token"
            if path.startswith("/api/") or path in ("/metrics", MCP_PATH):
                response = error(401, f"{reason}: send Authorization: Bearer <token>; the token is in "
                                      f"{self.token_file}")
            else:
                response = HTMLResponse(_LOGIN.format(reason=reason, token_file=html.escape(self.token_file)),
                                        status_code=401)
        await response(scope, receive, send)


async def _health(app: FastAPI) -> JSONResponse:
    """`{"status": ok|degraded|down, "agents": [...]}`; 503 when Postgres does not answer."""
    hub: EventHub = app.state.hub
    data: ConsoleData = app.state.data
    try:
        with anyio.fail_after(3):
            await data.message_count()
        reachable = True
    except (StoreUnavailable, TimeoutError):
        reachable = False
    status = await hub.current_status()
    agents = [
        {k: a.get(k) for k in ("role", "state", "pid", "host", "restarts", "last_heartbeat", "reason")}
        for a in status["agents"]
    ]
    states = [a["state"] for a in agents]
    if not reachable or not any(s in ("healthy", "degraded") for s in states):
        overall = "down"
    elif all(s == "healthy" for s in states):
        overall = "ok"
    else:
        overall = "degraded"
    body = {"status": overall, "database": "ok" if reachable else "unreachable", "agents": agents}
    return JSONResponse(body, status_code=200 if reachable else 503)


_LOGIN = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>ECHO console</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 3em auto; padding: 0 1em">
<h1>ECHO console</h1><p>{reason}. Add <code>?token=</code> and the token from
<code>{token_file}</code> to this address once (<code>echoctl up</code> prints where the
token is); the answer sets a cookie and takes the token out of the address.</p></body></html>"""
