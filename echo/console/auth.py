"""Who may use the console: one random token, kept in the private state directory.

The token is made at the console's first start in `$ECHO_STATE_DIR/console.token`
(mode 0600, created exclusively so two processes starting together agree on one).
A request shows it as `Authorization: Bearer <token>`, or once as `?token=...` on
the dashboard's URL: that answer sets an HttpOnly, SameSite=Strict cookie and sends
the browser to the same page without the token, so it stays out of the address bar,
the history and any script. SameSite=Strict also keeps other sites from posting to
the API with the cookie (no cross-site request forgery).

Open without a token: `/health` (for load balancers and probes), and `/metrics` when
the console listens on loopback only (a Prometheus on the same machine).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from echo.config import Settings
from echo.paths import private_dir

COOKIE = "echo_console"
TOKEN_FILE = "console.token"  # noqa: S105 - a file name, not a secret


def token_path(settings: Settings) -> Path:
    return settings.state_dir / TOKEN_FILE


def load_or_create_token(settings: Settings) -> str:
    """The console's token, made (0600) on first use."""
    path = token_path(settings)
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
    os.chmod(path, 0o600)
    token = path.read_text().strip()
    if not token:  # a file another process has just created but not yet written
        raise OSError(f"the console token file {path} is empty; delete it to make a new one")
    return token


def matches(given: str | None, token: str) -> bool:
    """Constant-time comparison, so the answer's timing reveals nothing of the token."""
    return bool(given) and hmac.compare_digest(str(given).encode(), token.encode())


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the console on this machine."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, tls: bool) -> str | None:
    """The warning for a console others can reach over plain HTTP, or None."""
    if is_loopback(host) or tls:
        return None
    return (
        f"the console listens on {host} without TLS: its token and everything it shows "
        "cross the network in clear text, readable by anyone on the path; give "
        "--tls-cert/--tls-key, or keep it on 127.0.0.1 behind an SSH tunnel or a TLS proxy"
    )
