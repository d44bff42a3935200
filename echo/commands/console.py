"""`echoctl serve` and `echoctl top`: the operator console, alone or in a terminal.

`serve` runs the console without the organisation (on another machine pointed at
the same Postgres, say); `echoctl up` already starts one beside the agents. `top`
is the dashboard's live view for a terminal without a browser.
"""

from __future__ import annotations

import typer

from echo.commands._common import console, err_console, run, settings
from echo.console.auth import exposure_warning, token_path


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("top")(top)


def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="Address to listen on (default 127.0.0.1).",
                                    show_default=False),
    port: int | None = typer.Option(None, "--port", min=0, max=65535,
                                    help="Port (default 8765; 0: any free one).", show_default=False),
    tls_cert: str | None = typer.Option(None, "--tls-cert", help="PEM certificate: serve HTTPS."),
    tls_key: str | None = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
) -> None:
    """Run the operator console alone (HTTP API, live dashboard, /metrics) until Ctrl-C."""
    from echo.console.server import SERVE_FLAGS, serve_until_signalled

    s = settings(ctx, console_host=host, console_port=port)
    warning = exposure_warning(s.console_host, tls=bool(tls_cert))
    if warning:
        err_console.print(f"[yellow]warning:[/] {warning}")

    run(lambda: serve_until_signalled(
        s, lambda here: console.print(f"console at {here.url} (token in {token_path(s)}); Ctrl-C stops it"),
        host=s.console_host, port=s.console_port, tls_cert=tls_cert, tls_key=tls_key, flags=SERVE_FLAGS))
    console.print("console stopped")


def top(
    ctx: typer.Context,
    interval: float = typer.Option(1.0, "--interval", min=0.2, help="Seconds between refreshes."),
    once: bool = typer.Option(False, "--once", help="Print one frame and exit (for scripts)."),
) -> None:
    """The organisation live in the terminal: agents, recent messages, tasks, workflows."""
    from echo.console.top import watch

    s = settings(ctx)
    run(lambda: watch(s, interval=interval, once=once, out=console))
