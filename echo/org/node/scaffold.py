"""`echoctl init [DIR]`: an editable copy of the default organisation for a user.

ECHO ships its default organisation inside the package (roles in `agents/`, config
defaults in `config/`, training scenarios in `training/`; `echo/_agents` and so on
in a wheel), so an installed `echoctl up` works from any folder. To change a role,
a prompt budget or a scenario, a user writes a copy with `echoctl init DIR` and
runs `echoctl` from DIR: `echo.paths.project_path` prefers the organisation in
the current directory over the packaged one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from echo.errors import UsageError
from echo.paths import ORG_FOLDERS, project_path


def write_organisation(target: Path, *, force: bool = False) -> list[Path]:
    """Copy agents/, config/ and training/ into `target`; the folders written.

    Refuses to overwrite an existing folder unless `force` (then files of the same
    name are replaced and the user's other files stay)."""
    target = target.resolve()
    sources = {name: project_path(name) for name in ORG_FOLDERS}
    clashes = [target / name for name in ORG_FOLDERS if (target / name).exists()]
    if clashes and not force:
        raise UsageError(
            f"{', '.join(map(str, clashes))} already exist(s); choose an empty folder or pass --force"
        )
    for name, source in sources.items():
        if source.resolve() == (target / name).resolve():
            raise UsageError(f"{target} is where the organisation comes from; choose another folder")
        if not source.is_dir():
            raise UsageError(f"the packaged {name}/ is missing at {source}; reinstall echo-org")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source in sources.items():
        shutil.copytree(source, target / name, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        written.append(target / name)
    return written
