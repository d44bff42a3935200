"""Fuzzing the settings: any ECHO_* environment, flag or config file gives valid
settings or one `ConfigError` line naming the setting, never another exception."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from echo.config import Settings, load_settings
from echo.errors import ConfigError
from tests.unit.fuzz.strategies import INJECTIONS

FIELDS = sorted(Settings.model_fields)
# What an environment variable can hold: any text without NUL or lone surrogates.
env_text = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=60),
    st.sampled_from([i for i in INJECTIONS if "\x00" not in i and "\ud800" not in i]),
    st.sampled_from(["0", "-1", "1e309", "nan", "inf", "2", "101", "true", "DEBUG", "debug",
                     "x" * 300, "redis://", "postgresql://u:p@h/db", "/tmp", "~/x"]),
)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("ECHO_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(values)
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith("ECHO_")]:
            del os.environ[key]
        os.environ.update(saved)


def check(**overrides: Any) -> Settings | None:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(("bad setting ", "config file ")), message
        assert "\n" not in message
        return None


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from([*FIELDS, "config_dir", "bogus"]), env_text, max_size=4))
@example({"budget_timezone": "x" * 300})  # found here: a zone name too long for a path (OSError)
def test_random_environment_gives_settings_or_one_config_error(values: dict[str, str]) -> None:
    env = {f"ECHO_{k.upper()}": v for k, v in values.items()}
    with environment(env):
        s = check()
    if s is not None:  # what was accepted holds the rules
        assert 1 <= s.pool_size <= 100 and s.max_body_bytes >= 1024
        assert s.log_level in {"DEBUG", "INFO", "WARNING", "ERROR"}
        assert s.namespace.isidentifier() and s.namespace == s.namespace.lower()


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["pool_size", "namespace", "log_level", "database_url", "redis_url",
                     "catchup_timeout", "max_body_bytes", "state_dir"]),
    st.one_of(env_text, st.integers(), st.floats(), st.booleans(), st.lists(st.integers(), max_size=2)),
    max_size=3))
def test_random_flags_give_settings_or_one_config_error(flags: dict[str, Any]) -> None:
    with environment({}):
        check(**flags)


toml_ish = st.one_of(
    st.text(max_size=200),
    st.lists(st.tuples(st.sampled_from([*FIELDS, "bogus", "[x]", "a.b", "\"a\\nb\""]),
                       st.sampled_from(['"x"', "1", "-5", "1.5", "true", "[1, 2]", "{a = 1}",
                                        '"""', "nan", "'postgresql://u:p@h/d'", "", '"\\u0000"'])),
             max_size=5).map(lambda kv: "\n".join(f"{k} = {v}" for k, v in kv)),
)


@settings(max_examples=100, deadline=None)
@given(toml_ish)
def test_random_config_file_gives_settings_or_one_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "echo.toml").write_text(text, encoding="utf-8", errors="surrogatepass")
        with environment({"ECHO_CONFIG_DIR": folder}):
            check()
