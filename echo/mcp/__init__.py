"""The organisation over the Model Context Protocol: the `echo` MCP server.

One server, built on the official `mcp` SDK, for two kinds of caller:

- an **operator** (Claude Code, Claude Desktop, any MCP client) reaches the
  organisation over stdio (`echoctl mcp`) or over streamable HTTP in the console
  (`/mcp`, behind the console's token); it acts as `operator`;
- a **Claude run of a role** is given the server scoped to that role (`echoctl mcp
  --role cto --fence cto/EPOCH/HOLDER`, echo/org/agent/reach.py): its messages are sent as
  the role and every write goes through a pool fenced by the role's lease, so a run
  whose agent lost the lease writes nothing (`echo.org.leases`).

Every tool is a thin call of `echo.org.client.Client` (`tools.py`), which checks the
input and raises one-line `EchoError`s; `server.py` turns any refusal into one tool
error result and keeps serving. `resources.py` holds the roles and the decisions.
"""

from echo.mcp.scope import Scope
from echo.mcp.server import build_server, serve_stdio

__all__ = ["Scope", "build_server", "serve_stdio"]
