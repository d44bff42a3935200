"""`python -m echo.org ROLE`: one agent process, as the organisation starts it.

The same agent as `echoctl agent ROLE --autonomous`, without loading the CLI
(typer, rich and every command group), which shaves a tenth of a second or more
off every start and restart: the supervisor starts six of these in a row.
Settings come from the ECHO_* environment the supervisor passes down.
"""

from __future__ import annotations

import sys

import anyio

from echo.config import Settings
from echo.errors import EchoError
from echo.org.leases import PREDECESSOR_FLAG, Predecessor
from echo.org.roles import Role


def serve(settings: Settings, role: Role, *, ready_line: str | None = None,
          predecessor: Predecessor | None = None) -> int:
    """Run the agent until SIGTERM/SIGINT; the process's exit status. `ready_line` is
    printed once the agent is up, for a supervisor that waits for it (never for a
    person at a terminal: `./cto --autonomous` prints no protocol lines). `predecessor`
    is the dead process this one replaces, from its supervisor (echo/org/leases.py)."""
    from echo import logs
    from echo.org.agent.process import run_agent

    logs.configure(settings.log_level)
    return anyio.run(lambda: run_agent(settings, role, ready_line=ready_line,
                                       predecessor=predecessor))


def main(argv: list[str]) -> int:
    from echo.org.node.state import READY_FLAG, READY_LINE

    usage = f"usage: python -m echo.org [{READY_FLAG}] [{PREDECESSOR_FLAG} PID[:EPOCH]] ROLE\n"
    announce = READY_FLAG in argv
    argv = [a for a in argv if a != READY_FLAG]
    predecessor: Predecessor | None = None
    if PREDECESSOR_FLAG in argv:
        at = argv.index(PREDECESSOR_FLAG)
        try:
            predecessor = Predecessor.parse(argv[at + 1])
        except (IndexError, ValueError):
            sys.stderr.write(f"error: {PREDECESSOR_FLAG} takes PID or PID:EPOCH\n{usage}")
            return 2
        del argv[at:at + 2]
    if len(argv) != 1:
        sys.stderr.write(usage)
        return 2
    try:
        from echo.config import load_settings
        from echo.org.roles import load_role

        settings = load_settings()
        return serve(settings, load_role(settings.agents_dir, argv[0]),
                     ready_line=READY_LINE if announce else None, predecessor=predecessor)
    except EchoError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
