"""Fuzzing role.toml: any text in agents/<role>/role.toml gives a Role or one
`ConfigError` line naming the file, never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from echo.errors import ConfigError
from echo.org.roles import Role, load_role_file
from echo.paths import project_path
from tests.unit.fuzz.strategies import INJECTIONS

KEYS = ["name", "title", "start_order", "responsibilities", "keywords", "system_prompt",
        "[claude]", "model", "allowed_tools", "max_turns", "max_budget_usd", "skip_permissions",
        "timeout_seconds", "isolate_config", "[work]", "concurrency", "executor", "bogus", "[x.y]",
        "\"a\\nb\"", "\"\\u001b[31m\""]
VALUES = ['"x"', '""', "1", "0", "-1", "1e400", "nan", "inf", "true", "false", '["a"]', "[]",
          "[1, 2]", '{a = 1}', '"""multi\nline"""', "'lit'", '"\\u0000"', '"\\ud800"', "1979-05-27",
          '"claude"', '"shell"', "[[t]]", '"CTO"', "300", "65", "999999999999999999999"]

line = st.one_of(
    st.tuples(st.sampled_from(KEYS), st.sampled_from(VALUES)).map(
        lambda kv: kv[0] if kv[0].startswith("[") else f"{kv[0]} = {kv[1]}"),
    st.sampled_from(INJECTIONS),
    st.text(max_size=30),
)
SHIPPED = (project_path("agents") / "cto" / "role.toml").read_text()
role_texts = st.one_of(
    st.lists(line, max_size=12).map("\n".join),
    st.binary(max_size=200),
    st.tuples(st.integers(0, len(SHIPPED)), st.text(max_size=10)).map(  # a shipped file, damaged
        lambda cut: SHIPPED[: cut[0]] + cut[1] + SHIPPED[cut[0]:]),
    st.integers(0, len(SHIPPED)).map(lambda n: SHIPPED[:n]),
)


@settings(max_examples=250, deadline=None)
@given(role_texts, st.sampled_from(["cto", "cfo", "x"]))
def test_any_role_file_gives_a_role_or_one_config_error_line(text: str | bytes, folder: str) -> None:
    with tempfile.TemporaryDirectory() as root:
        path = Path(root, folder, "role.toml")
        path.parent.mkdir()
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            role = load_role_file(path)
        except ConfigError as exc:
            message = str(exc)
            assert message.startswith(str(path)) and "\n" not in message, message
            return
    assert isinstance(role, Role) and role.name == folder
    assert role.title and role.keywords and role.responsibilities
