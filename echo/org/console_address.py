"""Where a running console answers: `$ECHO_STATE_DIR/console.json`.

Light on purpose (no web framework imported), so `echoctl up` and `status` can
print the console's address without loading the server.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from echo.config import Settings
from echo.paths import private_dir


@dataclass
class Listening:
    """Where a running console answers (never its token)."""

    url: str
    host: str
    port: int
    pid: int
    tls: bool


def console_file(settings: Settings) -> Path:
    return settings.state_dir / "console.json"


def url(host: str, port: int, tls: bool) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}/"


def write_listening(settings: Settings, here: Listening) -> None:
    private_dir(settings.state_dir)
    path = console_file(settings)
    tmp = path.with_suffix(f".{here.pid}.tmp")
    tmp.write_text(json.dumps(asdict(here)))
    tmp.chmod(0o600)
    tmp.replace(path)


def read_listening(settings: Settings) -> Listening | None:
    try:
        return Listening(**json.loads(console_file(settings).read_text()))
    except (OSError, ValueError, TypeError):
        return None
