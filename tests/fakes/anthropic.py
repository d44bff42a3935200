"""A fake Anthropic Messages API for the real `claude` CLI.

The e2e tests and the benchmark run the pinned Claude Code CLI against this
server (`ANTHROPIC_BASE_URL=http://127.0.0.1:PORT`), so the executor is tested
against the real client. Each `POST /v1/messages` takes the next scripted
`Reply` (the last one repeats): streamed text, an HTTP error such as 429 or 529,
or silence (the request is held open, for timeouts); `usage_limit(reset)` is the 429
that makes a subscriber's CLI print "You've hit your … limit · resets …".
`route(marker, reply)` answers
every request whose newest user message contains `marker` with `reply` instead, before
any script or conversation (the workflow's prompts start with `[echo:<step>]`, so one
role's question is routed while another role's task runs a conversation; a resumed
session's request carries its earlier prompts too, so only the newest counts). Every
request is recorded.

`conversation(*turns)` scripts a session instead, statelessly: a request is answered
with the turn numbered by the assistant messages already in it, so a session resumed
after a kill goes on where it stopped. A turn can be a tool call (`tool_use(name,
input)`: the CLI runs the tool and sends the result in its next request) or a stall
(`stall(then)`: the stream starts and goes silent, the first time that turn is asked;
asked again, e.g. by the resumed session, it answers `then`) or held (`held(name,
then)`: answered once the test calls `release(name)`). Side requests the CLI
makes without tools (titles, summaries) are answered plainly. `Request.messages` and
`.assistant_turns` count what each request carried.

It runs on its own thread (`ThreadingHTTPServer`), so it serves equally well a
pytest test on an event loop and a plain benchmark script.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """What the fake answers to one /v1/messages request."""

    text: str = "ok"
    status: int = 200
    error_type: str = ""
    error_message: str = ""
    hang: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    input_tokens: int = 10
    output_tokens: int = 5
    tool: tuple[str, dict[str, Any]] | None = None  # a tool_use block instead of text
    stall: bool = False  # start the stream, then go silent (once per conversation turn)
    hold: str | None = None  # answer only once the test calls `release(hold)`


def text(value: str) -> Reply:
    return Reply(text=value)


def error(status: int, message: str = "", *, kind: str = "", **headers: str) -> Reply:
    kinds = {401: "authentication_error", 429: "rate_limit_error", 529: "overloaded_error",
             400: "invalid_request_error", 500: "api_error"}
    return Reply(status=status, error_type=kind or kinds.get(status, "api_error"),
                 error_message=message or f"fake error {status}", headers=headers)


HANG = Reply(hang=True)


def tool_use(name: str, tool_input: dict[str, Any], **kw: Any) -> Reply:
    """A turn that calls a tool (stop_reason tool_use)."""
    return Reply(text="", tool=(name, tool_input), **kw)


def stall(then: Reply | None = None) -> Reply:
    """A turn whose stream starts and goes silent the first time; then it answers `then`."""
    then = then or Reply()
    return Reply(text=then.text, tool=then.tool, stall=True, input_tokens=then.input_tokens,
                 output_tokens=then.output_tokens)


def held(name: str, then: Reply) -> Reply:
    """`then`, answered only once the test calls `api.release(name)`: a turn that
    takes as long as the test needs (to watch a run between two of its steps)."""
    return Reply(text=then.text, tool=then.tool, hold=name, input_tokens=then.input_tokens,
                 output_tokens=then.output_tokens)


def usage_limit(reset: int, claim: str = "five_hour") -> Reply:
    """The 429 of a claude.ai plan's exhausted limit: `reset` in epoch seconds, `claim`
    five_hour ("session limit"), seven_day ("weekly limit"), seven_day_opus, ...

    The CLI reads these `anthropic-ratelimit-unified-*` headers only for a subscriber
    (OAuth) session, so run it with `env(api_key=None, oauth_token=...)`; with an API
    key the same reply is a plain 429 (`api_error_status` 429, "rate limited")."""
    return error(429, "rate limited", **{
        "anthropic-ratelimit-unified-status": "rejected",
        "anthropic-ratelimit-unified-reset": str(reset),
        "anthropic-ratelimit-unified-representative-claim": claim,
    })


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.time)  # when it arrived (epoch seconds)

    @property
    def messages(self) -> int:
        """How many messages the request carried."""
        found = self.body.get("messages") if isinstance(self.body, dict) else None
        return len(found) if isinstance(found, list) else 0

    @property
    def assistant_turns(self) -> int:
        """How many of them were the assistant's: the turns the session already had."""
        found = self.body.get("messages") if isinstance(self.body, dict) else None
        return sum(1 for m in found or [] if isinstance(m, dict) and m.get("role") == "assistant")

    @property
    def last_user_message(self) -> Any:
        """The request's newest user message: what was asked this time (a resumed
        session's request carries the earlier turns before it)."""
        found = self.body.get("messages") if isinstance(self.body, dict) else None
        users = [m for m in found or [] if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else None

    @property
    def has_tools(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("tools"))


class FakeAnthropic:
    """`with FakeAnthropic() as api: api.script(text("hi")); env = api.env()`."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._script: list[Reply] = [Reply()]
        self._routes: list[tuple[str, Reply]] = []
        self._limited: tuple[float, Reply] | None = None
        self._limit_seconds: int | None = None
        self._limit_claim = "five_hour"
        self._turns: list[Reply] | None = None
        self._stalled: set[int] = set()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._holds: dict[str, threading.Event] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _hold(self, name: str) -> threading.Event:
        with self._lock:
            return self._holds.setdefault(name, threading.Event())

    def release(self, name: str) -> None:
        """Let every turn `held(name, ...)` answer (now and from now on)."""
        self._hold(name).set()

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with `replies`, in order; the last one repeats."""
        with self._lock:
            self._script = list(replies) or [Reply()]

    def conversation(self, *turns: Reply) -> None:
        """Answer the session's n-th turn with `turns[n]` (the last one repeats), n being
        the assistant messages in the request; requests without tools get plain text."""
        with self._lock:
            self._turns = list(turns) or [Reply()]
            self._stalled = set()

    def session_requests(self) -> list[Request]:
        """The requests of the conversation itself (with tools), in order."""
        return [r for r in self.message_requests() if r.has_tools]

    def route(self, marker: str, reply: Reply) -> None:
        """Answer any request whose newest user message contains `marker` with `reply`
        (always; the first matching route wins)."""
        with self._lock:
            self._routes.append((marker, reply))

    def limit_for(self, seconds: int, claim: str = "five_hour") -> None:
        """From the next request on, answer every request with the plan's usage limit for
        `seconds` (its reset, in epoch seconds, is then `limit_reset`), then as
        scripted: a window that really resets, however slowly the clients start."""
        with self._lock:
            self._limit_seconds, self._limit_claim = seconds, claim

    @property
    def limit_reset(self) -> float | None:
        with self._lock:
            return self._limited[0] if self._limited else None

    def message_requests(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/v1/messages")
                    and not r.path.startswith("/v1/messages/count_tokens")]

    def env(self, api_key: str | None = "sk-ant-fake-key", *,
            oauth_token: str | None = None) -> dict[str, str]:
        """The variables that point the CLI here and turn off its other traffic.

        `oauth_token` (with `api_key=None`) makes the CLI a claude.ai subscriber
        (CLAUDE_CODE_OAUTH_TOKEN; it then sends `Authorization: Bearer` and applies the
        plan's usage limits); an ANTHROPIC_API_KEY would take precedence over it."""
        env = {
            "ANTHROPIC_BASE_URL": self.url,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_ERROR_REPORTING": "1",
        }
        if api_key is not None:
            env["ANTHROPIC_API_KEY"] = api_key
        if oauth_token is not None:
            env["CLAUDE_CODE_OAUTH_TOKEN"] = oauth_token
        return env

    def start(self) -> FakeAnthropic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        for hold in list(self._holds.values()):
            hold.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_reply(self, req: Request | None = None) -> Reply:
        with self._lock:
            if self._limit_seconds is not None and self._limited is None:
                reset = int(time.time()) + self._limit_seconds
                self._limited = (float(reset), usage_limit(reset, self._limit_claim))
            if self._limited is not None and time.time() < self._limited[0]:
                return self._limited[1]
            if req is not None and self._routes:
                prompt = json.dumps(req.last_user_message)
                for marker, reply in self._routes:
                    if marker in prompt:
                        return reply
            if req is not None and self._turns is not None:
                if not req.has_tools:
                    return Reply(text="Side answer")
                n = min(req.assistant_turns, len(self._turns) - 1)
                reply = self._turns[n]
                if reply.stall:
                    if n in self._stalled:
                        return Reply(text=reply.text, tool=reply.tool,
                                     input_tokens=reply.input_tokens,
                                     output_tokens=reply.output_tokens)
                    self._stalled.add(n)
                return reply
            return self._script.pop(0) if len(self._script) > 1 else self._script[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _record(self) -> Request:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                req = Request(self.command, self.path, dict(self.headers.items()), body)
                with fake._lock:
                    fake.requests.append(req)
                return req

            def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._record()
                self._json(200, {"data": [], "has_more": False})

            def do_HEAD(self) -> None:
                self._record()
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                req = self._record()
                if req.path.startswith("/v1/messages/count_tokens"):
                    self._json(200, {"input_tokens": 10})
                elif req.path.startswith("/v1/messages"):
                    self._messages(req, fake._next_reply(req))
                else:
                    self._json(200, {})

            def _messages(self, req: Request, reply: Reply) -> None:
                if reply.hang:
                    fake._release.wait()
                    return
                if reply.hold is not None:
                    fake._hold(reply.hold).wait()
                if reply.status != 200:
                    self._json(reply.status, {"type": "error", "error": {
                        "type": reply.error_type, "message": reply.error_message}},
                        reply.headers)
                    return
                body = req.body if isinstance(req.body, dict) else {}
                model = body.get("model", "claude-sonnet-4-5")
                if not body.get("stream"):
                    self._json(200, _message(model, reply))
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                self.end_headers()
                for event, data in _events(model, reply):
                    self.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
                    self.wfile.flush()
                    if reply.stall and event == "content_block_start":
                        fake._release.wait()  # silent mid-stream until the fake stops
                        return
                self.close_connection = True

        return Handler


def _block(reply: Reply) -> dict[str, Any]:
    if reply.tool is not None:
        return {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}",
                "name": reply.tool[0], "input": reply.tool[1]}
    return {"type": "text", "text": reply.text}


def _message(model: str, reply: Reply) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
        "model": model, "content": [_block(reply)],
        "stop_reason": "tool_use" if reply.tool else "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
    }


def _events(model: str, reply: Reply) -> Iterator[tuple[str, dict[str, Any]]]:
    start = _message(model, reply)
    start.update(content=[], stop_reason=None,
                 usage={"input_tokens": reply.input_tokens, "output_tokens": 1})
    yield "message_start", {"type": "message_start", "message": start}
    if reply.tool is not None:
        block = {**_block(reply), "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(reply.tool[1])}
    else:
        block, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": reply.text}
    yield "content_block_start", {"type": "content_block_start", "index": 0,
                                  "content_block": block}
    yield "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": "tool_use" if reply.tool else "end_turn",
                                      "stop_sequence": None},
                            "usage": {"output_tokens": reply.output_tokens}}
    yield "message_stop", {"type": "message_stop"}
