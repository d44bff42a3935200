"""`echoctl init`: an editable copy of the default organisation to start from.

What it writes (roles, config, training scenarios) is echo.org.node.scaffold's; the
command says where, and how to run echoctl from there."""

from __future__ import annotations

from pathlib import Path

import typer

from echo.commands._common import console


def register(app: typer.Typer) -> None:
    app.command("init")(init)


def init(
    directory: Path = typer.Argument(Path("."), help="Where to write agents/, config/ and training/."),
    force: bool = typer.Option(False, "--force", help="Write into existing folders (same names replaced)."),
) -> None:
    """Write an editable copy of the default organisation (roles, config, training scenarios)."""
    from echo.org.node.scaffold import write_organisation

    written = write_organisation(directory, force=force)
    console.print(f"wrote {', '.join(p.name + '/' for p in written)} in {written[0].parent}")
    console.print(
        f"run echoctl from there (`cd {directory}`; `echoctl up`): it uses this organisation; "
        "edit agents/<role>/role.toml to change a role"
    )
