"""The console's token and its exposure rules."""

from __future__ import annotations

from pathlib import Path

from echo.config import Settings
from echo.console.auth import bearer, exposure_warning, is_loopback, load_or_create_token, matches


def test_the_token_is_made_once_private_and_random(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path / "state")
    first = load_or_create_token(s)
    assert load_or_create_token(s) == first and len(first) >= 40
    assert (tmp_path / "state" / "console.token").stat().st_mode & 0o777 == 0o600
    other = load_or_create_token(Settings(state_dir=tmp_path / "other"))
    assert other != first


def test_matching_and_bearer() -> None:
    assert matches("abc", "abc") and not matches("abd", "abc") and not matches(None, "abc")
    assert not matches("", "abc")
    assert bearer("Bearer xyz") == "xyz" and bearer("bearer xyz") == "xyz"
    assert bearer("Basic xyz") is None and bearer(None) is None


def test_binding_beyond_loopback_without_tls_warns_naming_the_risk() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert is_loopback(host) and exposure_warning(host, tls=False) is None
    warning = exposure_warning("0.0.0.0", tls=False)
    assert warning and "clear text" in warning and "token" in warning and "--tls-cert" in warning
    assert exposure_warning("0.0.0.0", tls=True) is None
    assert not is_loopback("example.org")


def test_up_starts_the_console_on_loopback_8765_by_default(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path)
    assert s.console and s.console_host == "127.0.0.1" and s.console_port == 8765


async def test_the_401_page_names_the_token_file_and_never_the_token(tmp_path: Path) -> None:
    """The login page says where the token is, as this machine has it (not
    `$ECHO_STATE_DIR`, which may be unset), and what to add to the address."""
    import httpx

    from echo.console.app import TokenGuard

    async def inner(scope: object, receive: object, send: object) -> None:
        raise AssertionError("a request without the token reached the app")

    token_file = str(tmp_path / "state dir" / "console.token")
    guard = TokenGuard(inner, token="s3cret-token-value", metrics_open=False,  # type: ignore[arg-type]
                       token_file=token_file)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard),
                                 base_url="http://127.0.0.1") as client:
        page = await client.get("/")
        api = await client.get("/api/v1/agents")
    assert page.status_code == 401 and api.status_code == 401
    assert token_file in page.text and "?token=" in page.text and "ends in" not in page.text
    assert token_file in api.json()["error"]
    assert "s3cret-token-value" not in page.text + api.text
