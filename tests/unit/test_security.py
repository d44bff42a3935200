"""Security properties that hold for the code itself, checked without services:
no shell anywhere, permission bypass only when a role asks, secrets redacted,
and URLs that carry TLS and passwords reach the drivers unchanged."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import echo
from echo.bus import RedisTransport
from echo.config import Settings, load_settings
from echo.errors import ConfigError
from echo.org.agent.tree import role_executors
from echo.org.roles import load_roles
from echo.paths import project_path
from echo.urls import redact_url
from echo.work.claude import ClaudeExecutor

ECHO = Path(echo.__file__).parent
SHELL_CALLS = {("os", "system"), ("os", "popen"), ("os", "execl"), ("os", "execlp"),
               ("subprocess", "getoutput"), ("subprocess", "getstatusoutput"),
               ("asyncio", "create_subprocess_shell")}
SPAWNERS = {"Popen", "run", "call", "check_call", "check_output", "open_process", "run_process",
            "create_subprocess_exec"}


def _dotted(node: ast.expr) -> tuple[str, ...]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts))


def shell_uses(source: str, filename: str) -> list[str]:
    """Every place in `source` that runs a command through a shell, or could."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{filename}:{node.lineno}"
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                found.append(f"{where}: shell={ast.unparse(kw.value)}")
        if name[-2:] in SHELL_CALLS or name[-1:] == ("create_subprocess_shell",):
            found.append(f"{where}: {'.'.join(name)}")
        # A command given as one string is a shell command line for anyio and asyncio.
        if name and name[-1] in SPAWNERS and node.args and (
                isinstance(node.args[0], ast.JoinedStr)
                or (isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str))):
            found.append(f"{where}: {'.'.join(name)} with a command string")
    return found


def test_the_scanner_finds_what_it_looks_for() -> None:
    bad = ("import os, subprocess, anyio\nsubprocess.run('ls', shell=True)\nos.system('ls')\n"
           "os.popen('ls')\nanyio.open_process(f'ls {x}')\nsubprocess.Popen(['ls'], shell=flag)\n")
    assert {hit.split(":")[1] for hit in shell_uses(bad, "bad.py")} == {"2", "3", "4", "5", "6"}
    assert shell_uses("subprocess.run(['ls'], shell=False)\nanyio.open_process(argv)\n", "ok.py") == []


def test_no_module_runs_anything_through_a_shell() -> None:
    modules = sorted(ECHO.rglob("*.py"))
    assert len(modules) > 30  # the scan really covers the package
    found = [hit for path in modules for hit in shell_uses(path.read_text(), str(path))]
    assert found == []


def _role(skip: bool):  # type: ignore[no-untyped-def]
    role = next(iter(load_roles(project_path("agents")).values()))
    return role.model_copy(update={"claude": role.claude.model_copy(update={"skip_permissions": skip})})


def _argv(executor: ClaudeExecutor, payload: dict[str, object] | None = None) -> list[str]:
    from datetime import UTC, datetime

    from echo.work.tasks import Task

    task = Task(task_id=1, task_type="claude", description="x", priority=0, role=None,
                worker_id="w:1:0", attempt=1, timeout_seconds=5, max_retries=0, retry_count=0,
                payload=payload or {}, started_at=datetime.now(UTC))
    return executor.argv("claude", executor.options_for(task))


def test_permission_bypass_only_when_the_role_file_asks(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path)
    shipped = load_roles(project_path("agents"))
    for role in shipped.values():
        executor = role_executors(s, role)["claude"]
        assert isinstance(executor, ClaudeExecutor)
        assert "--dangerously-skip-permissions" not in _argv(executor)
        asked = {"claude": {"skip_permissions": True, "allowed_tools": ["Bash"]}}
        assert "--dangerously-skip-permissions" not in _argv(executor, asked)  # a task cannot
    opted_in = role_executors(s, _role(True))["claude"]
    assert isinstance(opted_in, ClaudeExecutor)
    assert _argv(opted_in).count("--dangerously-skip-permissions") == 1


@pytest.mark.parametrize(("url", "secret"), [
    ("postgresql://echo:pa55word@db1:5432,db2:5432/echo?target_session_attrs=read-write", "pa55word"),
    ("postgresql://echo@db/echo?password=pa55word&sslmode=require", "pa55word"),
    ("host=db user=echo password=pa55word dbname=echo", "pa55word"),
    ("host=db password='pa 55 word' dbname=echo", "pa 55 word"),
    ("redis://:pa55word@cache:6379/0", "pa55word"),
    ("rediss://user:pa55word@cache:6380/1", "pa55word"),
])
def test_redact_url_hides_every_password_form(url: str, secret: str) -> None:
    shown = redact_url(url)
    assert secret not in shown and "***" in shown


def test_a_bad_url_is_one_config_error_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("ECHO_DATABASE_URL", "ECHO_REDIS_URL"):
        monkeypatch.delenv(key, raising=False)
    for name, url in [("database_url", "postgresql://u:pa55word@db:notaport/x"),
                      ("database_url", "mysql://u:pa55word@db/x"),
                      ("redis_url", "redis://:pa55word@cache:notaport/0"),
                      ("redis_url", "http://:pa55word@cache/0")]:
        with pytest.raises(ConfigError) as info:
            load_settings(**{name: url})
        assert name in str(info.value) and "pa55word" not in str(info.value)


def test_redis_urls_reach_redis_py_unchanged_tls_and_auth(tmp_path: Path) -> None:
    """TLS is checked at the configuration level: the URL's scheme selects redis-py's
    SSL connection with the URL's host, port, db, user and password. (No TLS Redis
    server can be made here; a plain AUTH server is exercised in the integration
    tests.)"""
    from redis.asyncio.connection import SSLConnection

    s = Settings(state_dir=tmp_path, redis_url="rediss://alice:pa55word@cache.example:6380/3")
    transport = RedisTransport(s.bus)
    pool = transport.client.connection_pool
    assert transport.url == s.redis_url == "rediss://alice:pa55word@cache.example:6380/3"
    assert issubclass(pool.connection_class, SSLConnection)
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.example", 6380, 3)
    assert (kwargs["username"], kwargs["password"]) == ("alice", "pa55word")
    plain = RedisTransport(Settings(state_dir=tmp_path, redis_url="redis://:pw@127.0.0.1:6379/0").bus)
    assert not issubclass(plain.client.connection_pool.connection_class, SSLConnection)
