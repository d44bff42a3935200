"""What every `echoctl` command shares: settings from flags, the client, output.

Commands call `echo.org.client.Client` and render what it returns: rich tables for
people and, with `--json`, one JSON document for scripts. They hold no SQL and
open no connection themselves. Errors never reach the user as tracebacks:
`echo.cli.main` prints the one-line message of any `EchoError` and exits with its
code.

Output width: the terminal's, or 80 columns when the output is not a terminal (a
pipe, a file), like most tools; a table gives way in its long text columns,
never in a role name (`role_column`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import anyio
import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from echo.config import Settings, load_settings
from echo.org.client import Client

T = TypeVar("T")

console = Console(width=None if sys.stdout.isatty() else 80)
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


def with_client(s: Settings, fn: Callable[[Client], Awaitable[T]]) -> T:
    """Run `fn` with a client of `s`, closed afterwards (its pool and publisher)."""
    async def main() -> T:
        async with Client(s) as client:
            return await fn(client)

    return anyio.run(main)


def emit_json(data: Any) -> None:
    """One JSON document on stdout; pydantic models (and lists of them) as their JSON form."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    elif isinstance(data, list) and data and isinstance(data[0], BaseModel):
        data = [d.model_dump(mode="json") for d in data]
    sys.stdout.write(json.dumps(data, default=str, indent=2) + "\n")


def plain_table(*headers: str, **options: Any) -> Table:
    """A table without borders, columns one space apart: what fits 80 columns. Every
    listing uses it, so they all look alike."""
    return Table(*headers, box=None, padding=(0, 1), collapse_padding=True, pad_edge=False,
                 **options)


def role_column(table: Table, header: str, roles: Iterable[str | None]) -> None:
    """A column of role names that is never cut or wrapped: as wide as its longest name."""
    width = max([len(header), *(len(r) for r in roles if r)])
    table.add_column(header, no_wrap=True, min_width=width)


def clip(text: str, limit: int) -> str:
    """`text` on one line, at most `limit` characters, cut at a word with `…`."""
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    if line[limit - 1] != " " and " " in cut[limit // 2:]:  # a word would be cut: drop it
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:") + "…"
