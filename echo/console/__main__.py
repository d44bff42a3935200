"""`python -m echo.console [--host H] [--port P]`: the console as the organisation runs it.

The organisation starts this as a supervised child (what `echoctl serve` runs, minus
the CLI's imports). It prints `ECHO-READY console <url>` once it accepts
connections, and stops gracefully on SIGTERM or SIGINT. Settings come from the
ECHO_* environment the organisation passes down.
"""

from __future__ import annotations

import argparse
import logging
import sys

import anyio

from echo.errors import sole_error

READY = "ECHO-READY console"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m echo.console")
    parser.add_argument("--host", help="default: ECHO_CONSOLE_HOST (127.0.0.1)")
    parser.add_argument("--port", type=int, help="default: ECHO_CONSOLE_PORT (8765); 0: any free port")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args(argv)
    try:
        from echo.config import load_settings
        from echo.console.server import serve_until_signalled

        settings = load_settings()
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        logging.getLogger().setLevel(settings.log_level)

        async def run() -> None:
            await serve_until_signalled(
                settings, lambda here: print(f"{READY} {here.url}", flush=True),
                host=args.host or settings.console_host,
                port=settings.console_port if args.port is None else args.port,
                tls_cert=args.tls_cert, tls_key=args.tls_key,
            )

        anyio.run(run)
        return 0
    except Exception as exc:  # one line per failure in console.log, not an exception group
        known = sole_error(exc)
        if known is None:
            raise
        sys.stderr.write(f"error: {' '.join(str(known).split())}\n")
        return known.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
