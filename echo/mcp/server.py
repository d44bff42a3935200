"""The `echo` MCP server for a `Scope`, and its stdio transport.

`build_server` registers the scope's tools (`echo.mcp.tools`) and the resources
(`echo.mcp.resources`) on one `MCPServer`. Every refusal a caller can cause (an
`EchoError` of the client, arguments that fail the input schema, a NUL character,
an unknown tool) becomes ONE tool error result with a one-line message, and the
server answers the next call: a model reads the line and tries again. Anything else
is a bug: the SDK logs its traceback (to stderr, never stdout: stdout is the
protocol) and the caller sees only "Error executing tool <name>".
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp_types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import ValidationError

from echo import __version__
from echo.config import Settings
from echo.errors import sole_error
from echo.mcp.resources import add_resources
from echo.mcp.scope import Scope
from echo.mcp.tools import Org, ToolSpec, as_json, tools_for
from echo.org.client import Client

log = logging.getLogger(__name__)

NAME = "echo"


def line(text: str) -> str:
    return " ".join(text.split())


def bad_arguments(exc: ValidationError) -> str:
    """`bad argument limit: Input should be ...`: every argument the schema refused."""
    wrong = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                      for e in exc.errors())
    return f"bad argument {wrong} (the tool's input schema says what it takes)"


def refusal(exc: ToolError) -> str | None:
    """The one line for a call the caller got wrong, or None for a crash (a bug)."""
    cause = exc.__cause__
    while isinstance(cause, ToolError) and cause.__cause__ is not None:  # a nested wrapper
        cause = cause.__cause__
    known = sole_error(cause) if cause is not None else None
    if known is not None:
        return line(str(known))
    if isinstance(exc, UnexpectedToolError):
        return None
    if isinstance(cause, ValidationError):
        return line(bad_arguments(cause))
    return line(str(exc))  # the SDK's own: an unknown tool


def nul_in(value: Any) -> bool:
    """Whether a NUL character hides anywhere in `value` (Postgres stores none)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(nul_in(k) or nul_in(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(nul_in(v) for v in value)
    return False


def error_result(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


class EchoServer(MCPServer[Any]):
    """`MCPServer` whose tool calls never fail for bad input, only refuse it in one line."""

    async def call_tool(self, name: str, arguments: dict[str, Any],
                        context: Context[Any, Any] | None = None
                        ) -> CallToolResult | InputRequiredResult:
        bad = [key for key, value in arguments.items() if nul_in(value)]
        if bad:
            return error_result(f"argument {bad[0]} holds a NUL character (\\x00), which "
                                "nothing stores; send the text without it")
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            text = refusal(exc)
            if text is None:
                raise  # a bug: the SDK logs its traceback and answers generically
            log.info("tool %s refused: %s", name, text)
            return error_result(text)


def bind(spec: ToolSpec, org: Org) -> Callable[..., Any]:
    """`spec`'s function with `org` given: what the SDK registers. Its signature is the
    function's without the `org` parameter, so the input schema is the tool's own."""
    fn = spec.fn
    sig = inspect.signature(fn, eval_str=True)

    async def call(**arguments: Any) -> CallToolResult:
        return CallToolResult(content=[TextContent(type="text", text=as_json(await fn(org, **arguments)))])

    call.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=list(sig.parameters.values())[1:], return_annotation=CallToolResult)
    call.__name__ = call.__qualname__ = spec.name
    call.__doc__ = fn.__doc__
    return call


def instructions(scope: Scope) -> str:
    who = ("the operator" if scope.is_operator else
           f"the {scope.role} role: what you send is from {scope.role}, and your writes stop "
           "being accepted if your role's agent loses its lease")
    return (f"ECHO's organisation of role agents (ceo, cto, ...). You act as {who}. Read "
            "echo://roles for who does what; send, broadcast and start_workflow reach the "
            "agents; messages, thread, task, workflow, decisions, status and spend read.")


def build_server(settings: Settings, scope: Scope, connect: Callable[[], Client]) -> EchoServer:
    """The `echo` server of `scope` for the organisation `settings` names; `connect`
    returns the client the tools call (opened, for a role, with the role's fence)."""
    server = EchoServer(NAME, title="ECHO", version=__version__, instructions=instructions(scope),
                        log_level="WARNING")
    org = Org(settings, scope, connect)
    for spec in tools_for(scope):
        server.add_tool(bind(spec, org), name=spec.name,
                        description=inspect.cleandoc(spec.fn.__doc__ or spec.name),
                        annotations=ToolAnnotations(read_only_hint=spec.read_only))
    add_resources(server, org)
    return server


async def serve_stdio(settings: Settings, scope: Scope) -> None:
    """Serve `scope`'s server on stdin/stdout until the client closes stdin."""
    async with Client(settings, fence=scope.fence) as client:
        await client.open_publisher()  # in this task, which outlives every request
        await build_server(settings, scope, lambda: client).run_stdio_async()
