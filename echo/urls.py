"""The URLs of Postgres and Redis: their shape checked, a Sentinel URL read, passwords hidden.

A typo in `ECHO_DATABASE_URL` or `ECHO_REDIS_URL` is a `ConfigError` naming the setting
(`echo.config.Settings` runs `check_postgres_url` and `check_redis_url`), not a driver
traceback or "Postgres unavailable" later. Nothing here ever quotes a URL in an error:
it may hold a password; `redact_url` is how one is shown in logs, status and errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit


def check_postgres_url(url: str) -> None:
    """The shape of the URL (scheme, numeric ports), so a typo is a `ConfigError` naming
    the setting and not a driver traceback or "Postgres unavailable". asyncpg takes
    only URLs, so a key=value DSN (or any other text) is refused here too.
    Messages never quote the URL: it may hold a password."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        raise ValueError("use a URL postgresql://user:password@host:port/database")
    hosts = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    for host in hosts.split(",") if hosts else []:
        port = ""
        if host.startswith("["):
            _address, closed, tail = host[1:].partition("]")
            if not closed or (tail and not tail.startswith(":")):
                raise ValueError("an IPv6 host is written [address]:port")
            port = tail[1:]
        elif ":" in host:
            port = host.rpartition(":")[2]
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError("a port in the URL is not a number from 1 to 65535")


def check_redis_url(url: str) -> None:
    """What redis-py would refuse when it connects, refused now in one line."""
    from redis.connection import parse_url

    if is_sentinel_url(url):
        parse_sentinel_url(url)
        return
    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        secret = urlsplit(url).password if "@" in url else None
        reason = str(exc).replace(secret, "***") if secret else str(exc)
        raise ValueError(
            "use redis://[:password@]host:port/db, rediss:// or "
            f"redis+sentinel://[:password@]host:port,host:port/service/db ({reason})"
        ) from None


SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
_SENTINEL_FORM = "redis+sentinel://[:password@]host:26379,host:26380/service[/db]"


@dataclass(frozen=True)
class SentinelTarget:
    """A Redis reached through Sentinel: where the Sentinels are, which service (the
    master's name in the Sentinels' config) and database, and the credentials of the
    master. Sentinels are asked for the current master on every new connection, so
    a failover moves clients to the promoted replica."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelTarget:
    """`redis+sentinel://[[user]:password@]h1:26379,h2:26380/service[/db][?sentinel_password=p]`
    (`rediss+sentinel://` for TLS). The password is the master's; the Sentinels' own, if
    they require one, is `sentinel_password`. Errors never quote the URL: it may hold a
    password."""
    scheme, _, rest = url.partition("://")
    netloc, _, path_query = rest.partition("/")
    path, _, query = path_query.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        hosts = netloc
    sentinels: list[tuple[str, int]] = []
    for host in hosts.split(","):
        name, colon, port = host.rpartition(":")
        if not colon:
            name, port = host, "26379"
        if not name or not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"each Sentinel is host:port (port 1 to 65535); use {_SENTINEL_FORM}")
        sentinels.append((name.strip("[]"), int(port)))
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise ValueError(f"name the master's service after the hosts; use {_SENTINEL_FORM}")
    if len(parts) == 2 and not parts[1].isdigit():
        raise ValueError(f"the database after the service is a number; use {_SENTINEL_FORM}")
    user, _, password = userinfo.partition(":")
    options = parse_qs(query)
    unknown = set(options) - {"sentinel_password"}
    if unknown:
        raise ValueError(f"unknown option {sorted(unknown)[0]!r} in the Sentinel URL; the one "
                         f"option is sentinel_password: {_SENTINEL_FORM}?sentinel_password=p")
    sentinel_password = options.get("sentinel_password", [None])[0]
    return SentinelTarget(
        sentinels=tuple(sentinels),
        service=unquote(parts[0]),
        db=int(parts[1]) if len(parts) == 2 else 0,
        username=unquote(user) or None,
        password=unquote(password) or None,
        sentinel_password=sentinel_password or None,
        ssl=scheme.lower() == "rediss+sentinel",
    )


_KEYWORD_SECRET = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """Hide the password in a DSN or URL, for logs, status output and error messages."""
    if "://" not in url:
        return _KEYWORD_SECRET.sub(r"\1***", url)
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:***@{hosts}" if sep else f"{user}@{hosts}"
    query = re.sub(r"(password=)[^&]*", r"\1***", parts.query, flags=re.IGNORECASE)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
