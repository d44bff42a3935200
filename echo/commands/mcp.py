"""`echoctl mcp`: the organisation as an MCP server on stdin/stdout (echo.mcp).

Point an MCP client at it (Claude Code: `claude mcp add echo -- echoctl mcp`). Without
options it acts as the operator; `--role ROLE --fence ROLE/EPOCH/HOLDER` is how ECHO
gives a role's Claude run the organisation: it sends as that role and writes under
the role's lease. Both are checked before it serves (one line, exit 2). Stdout is the
protocol: logs go to stderr only.
"""

from __future__ import annotations

import typer

from echo.commands._common import run, settings


def register(app: typer.Typer) -> None:
    app.command("mcp")(mcp)


def mcp(
    ctx: typer.Context,
    role: str | None = typer.Option(None, "--role", help="Act as this role (with --fence)."),
    fence: str | None = typer.Option(None, "--fence", metavar="ROLE/EPOCH/HOLDER",
                                     help="The role's lease: its writes are refused once it passed on."),
) -> None:
    """Serve the organisation over MCP on stdio (tools and resources) until stdin closes."""
    from echo.mcp import Scope, serve_stdio

    s = settings(ctx)
    scope = Scope.of(s.agents_dir, role, fence)
    run(lambda: serve_stdio(s, scope))
