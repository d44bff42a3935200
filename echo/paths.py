"""Where ECHO's folders are: the project's (`config`, `agents`, `shared`, ...) and private ones.

Apart from the settings (echo.config) so that the layers below the loader (echo.db
reads its SQL from `shared/sql`, the embedded servers make private state folders)
find their files without importing it.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


#: The folders `echoctl init` copies: a user's own organisation, editable.
ORG_FOLDERS = ("agents", "config", "training")


def organisation_dir() -> Path | None:
    """The current directory if it holds an organisation (`agents/` and
    `config/echo.toml`, as `echoctl init` writes them), else None."""
    here = Path.cwd()
    if (here / "agents").is_dir() and (here / "config" / "echo.toml").is_file():
        return here
    return None


def project_path(name: str) -> Path:
    """Find a project folder (`config`, `agents`, `training`, `shared`).

    In order: the organisation in the current directory (`echoctl init`), the
    checkout this package runs from, and the copy shipped inside the wheel
    (`echo/_<name>`), so an installed ECHO has its default organisation too."""
    own = organisation_dir()
    if own is not None and name in ORG_FOLDERS:
        return own / name
    checkout = _PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / name).exists():
        return checkout / name
    return _PACKAGE_DIR / f"_{name}"


def private_dir(path: Path) -> Path:
    """Create a directory only its owner can read (state, logs, pid files)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path
