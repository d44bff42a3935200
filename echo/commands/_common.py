"""What every `echoctl` command shares: settings from flags, async running, output.

Commands print rich tables for people and, with `--json`, one JSON document for
scripts. Errors never reach the user as tracebacks: `echo.cli.main` prints the
one-line message of any `EchoError` and exits with its code.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import typer
from rich.console import Console

from echo.config import Settings, load_settings

T = TypeVar("T")

# Piped output (a script, a log) is not wrapped at 80 columns: tables stay readable.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, soft_wrap=True)

JsonOpt = typer.Option(False, "--json", help="Print JSON for scripts.")


def settings(ctx: typer.Context, **overrides: Any) -> Settings:
    """Settings with the global flags (and any command flags) on top."""
    base = dict(ctx.find_root().obj or {})
    base.update({k: v for k, v in overrides.items() if v is not None})
    return load_settings(**base)


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run one async command body on asyncio."""
    async def main() -> T:
        return await fn()

    return anyio.run(main)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str, indent=2) + "\n")
