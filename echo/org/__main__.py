"""`python -m echo.org ROLE`: one agent process, as the organisation starts it.

The same agent as `echoctl agent ROLE --autonomous`, without loading the CLI
(typer, rich and every command group), which shaves a tenth of a second or more
off every start and restart: the supervisor starts six of these in a row.
Settings come from the ECHO_* environment the supervisor passes down.
"""

from __future__ import annotations

import logging
import sys

import anyio

from echo.config import Settings
from echo.errors import EchoError
from echo.org.roles import Role


def serve(settings: Settings, role: Role) -> int:
    """Run the agent until SIGTERM/SIGINT; the process's exit status."""
    from echo.org.agent import run_agent
    from echo.org.organisation import READY_LINE

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(settings.log_level)
    return anyio.run(lambda: run_agent(settings, role, ready_line=READY_LINE))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m echo.org ROLE\n")
        return 2
    try:
        from echo.config import load_settings
        from echo.org.roles import load_role

        settings = load_settings()
        return serve(settings, load_role(settings.agents_dir, argv[0]))
    except EchoError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
