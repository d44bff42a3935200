"""ECHO as a user of a package index gets it: the wheel, installed (not editable) in a
fresh venv, run from an empty folder, finds its default organisation; `echoctl init`
writes an editable copy that `up`, `status` and `down` then run on.

The wheel is built from this checkout offline (hatchling from the dev venv, no build
isolation). The fresh venv gets the wheel alone (`--no-deps`); its dependencies come
from the dev venv's site-packages through a `.pth` line, which adds that folder but
not the editable install's own hook, so `import echo` is the wheel's copy (checked).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from echo.config import Settings

# Building, installing and starting an organisation from the wheel: slow on a loaded machine.
pytestmark = [pytest.mark.package, pytest.mark.timeout(300)]

CHECKOUT = Path(__file__).resolve().parents[2]


def _run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 120,
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel of this checkout installed; its bin directory."""
    root = tmp_path_factory.mktemp("package")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECHO_", "PYTHON"))}
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "--quiet", "-w", str(root / "dist"), str(CHECKOUT)], cwd=root, env=env)
    assert built.returncode == 0, built.stderr
    wheel = next((root / "dist").glob("echo_org-*.whl"))
    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root, env=env)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=root, env=env).stdout.strip())
    done = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                 "--no-deps", str(wheel)], cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    (purelib / "zz_echo_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


async def test_the_installed_wheel_runs_an_organisation_from_an_empty_folder(
    installed: Path, settings: Settings, tmp_path: Path
) -> None:
    home = tmp_path / "my-org"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECHO_", "PYTHON"))}
    env.update({
        "PATH": f"{installed}{os.pathsep}{env.get('PATH', '')}",
        "ECHO_DATABASE_URL": str(settings.database_url),
        "ECHO_NAMESPACE": settings.namespace,
        "ECHO_STATE_DIR": str(tmp_path / "state"),
    })
    echoctl = str(installed / "echoctl")

    where = _run([str(installed / "python"), "-c", "import echo; print(echo.__file__)"], cwd=home, env=env)
    assert str(CHECKOUT) not in where.stdout and str(installed.parent) in where.stdout, where.stdout

    # Without init, the packaged organisation and scenarios are there.
    known = _run([echoctl, "train", "nosuch"], cwd=home, env=env)
    assert known.returncode == 2 and "api_migration" in known.stderr, known.stderr

    made = _run([echoctl, "init"], cwd=home, env=env)
    assert made.returncode == 0, made.stderr
    for name in ("agents/cto/role.toml", "config/echo.toml", "training/api_migration.toml"):
        assert (home / name).is_file(), name
    assert os.access(home / "agents" / "cto" / "cto", os.X_OK)
    again = _run([echoctl, "init"], cwd=home, env=env)
    assert again.returncode == 2 and "--force" in again.stderr

    # The copy is the organisation now: a role added there is one `up` knows.
    (home / "agents" / "cto" / "role.toml").write_text(
        (home / "agents" / "cto" / "role.toml").read_text().replace('title = "', 'title = "Our ', 1)
    )
    try:
        up = _run([echoctl, "up", "--roles", "ceo,cto", "--detach"], cwd=home, env=env, timeout=180)
        assert up.returncode == 0, up.stdout + up.stderr
        status = _run([echoctl, "status", "--json"], cwd=home, env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        agents = {a["role"]: a["state"] for a in json.loads(status.stdout)["agents"]}
        assert agents["ceo"] == agents["cto"] == "healthy", agents
        overview = _run([str(home / "agents" / "cto" / "cto"), "--json"], cwd=home, env=env)
        assert overview.returncode == 0, overview.stderr
        assert json.loads(overview.stdout)["title"].startswith("Our ")
    finally:
        down = _run([echoctl, "down", "--timeout", "60"], cwd=home, env=env)
    assert down.returncode == 0, down.stderr
