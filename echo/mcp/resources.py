"""The `echo` server's resources: the roles (what each is for) and the decisions.

`echo://roles` lists every role; `echo://roles/<name>` is one role's description and
a summary of its prompt, so a run can see who to ask before it asks. They are read
from agents/ when the server is built (a role added later needs a new server, as it
needs a new agent). `echo://decisions` is read from the database at each read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.server.mcpserver.resources import FunctionResource

from echo.errors import EchoError
from echo.mcp.tools import Org, as_json
from echo.org.roles import Role, load_roles

JSON = "application/json"
#: How much of a role's system prompt its resource shows.
PROMPT_SUMMARY = 400


def role_summary(role: Role) -> dict[str, Any]:
    """What another role (or an operator) needs to know of `role`: its title, what it
    is responsible for, what it is asked about, and the start of its prompt."""
    prompt = " ".join(role.system_prompt.split())
    if len(prompt) > PROMPT_SUMMARY:
        prompt = prompt[:PROMPT_SUMMARY - 1].rsplit(" ", 1)[0] + "…"
    return {"name": role.name, "title": role.title, "responsibilities": role.responsibilities,
            "keywords": role.keywords, "prompt": prompt, "uri": f"echo://roles/{role.name}"}


def add_resources(server: MCPServer[Any], org: Org) -> None:
    """The roles of `org`'s agents directory and its decisions, on `server`."""
    roles = load_roles(org.settings.agents_dir)
    summaries = {name: role_summary(r) for name, r in roles.items()}

    def fixed(data: Any) -> Callable[[], Awaitable[str]]:
        async def read() -> str:
            return as_json(data)
        return read

    server.add_resource(FunctionResource(
        uri="echo://roles", name="roles", mime_type=JSON, fn=fixed(list(summaries.values())),
        description="Every role of the organisation: title, responsibilities, prompt summary."))
    for name, summary in summaries.items():
        server.add_resource(FunctionResource(
            uri=f"echo://roles/{name}", name=f"role {name}", mime_type=JSON, fn=fixed(summary),
            description=f"{summary['title']}: what the {name} role is for, and its prompt's start."))

    async def read_decisions() -> str:
        try:
            return as_json(await org.client.decisions())
        except EchoError as exc:  # one line for the client, not a crash
            raise ResourceError(" ".join(str(exc).split())) from exc

    server.add_resource(FunctionResource(
        uri="echo://decisions", name="decisions", mime_type=JSON, fn=read_decisions,
        description="The decisions the CEO wrote, newest first."))
