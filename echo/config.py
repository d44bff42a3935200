"""Settings: config/echo.toml, then config/<ECHO_ENV>.toml, then ECHO_* environment, then flags.

One `Settings` object carries every knob. Later sources win, so a developer can
keep defaults in `config/echo.toml`, a profile in `config/dev.toml`, and override
any single value with an environment variable (`ECHO_POOL_SIZE=4`) or a CLI flag.

`namespace` isolates an organisation: it is the Postgres schema that holds the
tables and the prefix of every Redis and NOTIFY channel. Tests give each test its
own namespace; production keeps the default. The URLs of Postgres and Redis are
checked by `echo.urls`.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from echo.errors import ConfigError, one_line
from echo.paths import project_path
from echo.slices import (
    BusSettings,
    ClaudeSettings,
    DatabaseSettings,
    GovernorSettings,
    LeaseSettings,
    WorkSettings,
)
from echo.urls import check_postgres_url, check_redis_url, redact_url

_S = TypeVar("_S", bound=BaseModel)
_NAMESPACE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
#: A comma outside parentheses: where ECHO_APPROVAL_TOOLS separates its rules.
_TOP_LEVEL_COMMA = re.compile(r",(?![^()]*\))")
_NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _default_node() -> str:
    """The host name, shortened to a valid node name."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:63].lstrip("._-")
    return name or "node"


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "echo"


def config_files(env: str | None = None) -> list[Path]:
    """The TOML files that apply, lowest precedence first."""
    env = env or os.environ.get("ECHO_ENV", "dev")
    config_dir = Path(os.environ.get("ECHO_CONFIG_DIR") or project_path("config"))
    return [p for p in (config_dir / "echo.toml", config_dir / f"{env}.toml") if _is_file(p)]


def _is_file(path: Path) -> bool:
    """Whether `path` is a file; a name the OS cannot even look up (too long) is not."""
    try:
        return path.is_file()
    except OSError:
        return False


class Settings(BaseSettings):
    """Every setting of ECHO. Field names map to `ECHO_<NAME>` variables."""

    model_config = SettingsConfigDict(env_prefix="ECHO_", extra="forbid", validate_default=True)

    env: str = Field("dev", description="Profile: selects config/<env>.toml")
    database_url: str | None = Field(None, description="postgresql:// URL; unset = embedded Postgres")
    redis_url: str | None = Field(
        None, description="redis://, rediss:// or redis+sentinel:// URL; unset = NOTIFY")
    namespace: str = Field("echo", description="Postgres schema and channel prefix")
    state_dir: Path = Field(default_factory=_default_state_dir)
    agents_dir: Path = Field(default_factory=lambda: project_path("agents"))
    pool_size: int = Field(2, ge=1, le=100, description="Postgres connections per process")
    connect_timeout: float = Field(5.0, gt=0, description="seconds to open a connection")
    command_timeout: float = Field(10.0, gt=0, description="seconds for one query")
    catchup_timeout: float = Field(2.0, gt=0, description="seconds catch-up may hold up a start")
    poll_interval: float = Field(1.0, gt=0, description="seconds between Postgres polls without Redis")
    worker_check_interval: float = Field(1.0, gt=0, description="seconds between queue polls")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="largest message body")
    max_task_bytes: int = Field(
        64 * 1024, ge=1024, description="largest task description, and largest task payload")
    task_lease_seconds: float = Field(
        30.0, gt=0, le=3600,
        description="a claimed task's lease: a killed worker's task waits this long before a rescue",
    )
    claude_bin: str = Field("claude", description="the Claude Code CLI to run")
    claude_account: str = Field(
        "default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$",
        description="the name of the Claude credentials this process runs with (plan pauses)")
    claude_billing: Literal["api", "subscription"] = Field(
        "api", description="api: costs are billed; subscription: costs are list-price estimates")
    claude_idle_timeout: float = Field(
        300.0, gt=0, description="seconds a Claude run may print nothing before the watchdog kills it")
    claude_result_grace: float = Field(
        5.0, gt=0, description="seconds a run may linger after its result before it is killed")
    claude_loop_repeats: int = Field(
        5, ge=2, description="the same tool call this many times in a row is a loop: stopped")
    claude_events_per_run: int = Field(
        2000, ge=2, description="run events kept per attempt (the rest are counted, not stored)")
    workflow_conversation: Literal["kept", "resumed", "off"] = Field(
        "kept", description="a role's questions of one workflow are one Claude session: kept, "
                            "in one CLI process kept for it; resumed, a process per question "
                            "resuming it; off, a fresh process and session per question")
    claude_events_retention_days: float = Field(
        14.0, gt=0, description="days run events and transcripts are kept")
    budget_daily_usd: float | None = Field(
        None, ge=0, description="the organisation's daily Claude budget; unset: none")
    budget_timezone: str = Field("UTC", description="the zone whose midnight starts a budget day")
    budget_burst_usd: float | None = Field(
        25.0, gt=0, description="burn-rate breaker: spend within burst_minutes that pauses Claude")
    budget_burst_minutes: float = Field(10.0, gt=0, le=24 * 60)
    approval_tools: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="tool calls every role's runs need an operator's approval for, in Claude "
        'Code\'s permission-rule syntax: ["Bash(git push:*)"] (a role adds its [approval] tools)')
    approval_timeout: float = Field(
        24 * 3600.0, gt=0, le=366 * 24 * 3600,
        description="seconds an approval request waits for a decision before it expires (denied)")
    console: bool = Field(True, description="`echoctl up` starts the operator console")
    console_host: str = Field("127.0.0.1", description="where the console listens")
    console_port: int = Field(8765, ge=0, le=65535, description="the console's port; 0: any free one")
    heart: bool = Field(
        True, description="`echoctl up` restarts its node, with backoff, when an agent gives up")
    log_level: str = Field("INFO")
    node: str = Field(default_factory=lambda: _default_node(), description="this machine's node name")
    lease_seconds: float = Field(5.0, gt=0, le=3600, description="how long a role lease lasts unrenewed")
    lease_renew_interval: float = Field(
        1.0, gt=0, description="seconds between lease renewals (at most lease_seconds / 2)")
    lease_takeover_grace: float = Field(
        5.0, ge=0, description="seconds a preferred node waits to take a role back"
    )
    prefer: str = Field("", description="comma-separated roles this node takes back when it returns")

    @field_validator("namespace")
    @classmethod
    def _namespace_is_identifier(cls, value: str) -> str:
        if not _NAMESPACE_RE.match(value):
            raise ValueError("use lowercase letters, digits and _ (at most 41), starting with a letter")
        return value

    @field_validator("node")
    @classmethod
    def _node_name(cls, value: str) -> str:
        if not _NODE_RE.match(value):
            raise ValueError(
                "use letters, digits, '.', '_' and '-' (at most 63), starting with a letter or digit"
            )
        return value

    @field_validator("lease_renew_interval")
    @classmethod
    def _renewal_inside_lease(cls, value: float, info: ValidationInfo) -> float:
        lease = info.data.get("lease_seconds")
        if lease is not None and value * 2 > lease:
            raise ValueError(
                f"must be at most half of lease_seconds ({lease:g} s), "
                "so a lease survives one missed renewal"
            )
        return value

    @field_validator("budget_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a path
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as UTC "
                             "or Europe/Paris") from None
        return value

    @field_validator("approval_tools", mode="before")
    @classmethod
    def _rule_list(cls, value: Any) -> Any:
        """ECHO_APPROVAL_TOOLS is a JSON list, or rules separated by commas outside
        parentheses (`Bash(git push:*),Write`); empty is none."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                raise ValueError('not a JSON list of rules; write ["Bash(git push:*)"]') from None
        return [r.strip() for r in _TOP_LEVEL_COMMA.split(text) if r.strip()]

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        return check_log_level(value)

    @field_validator("database_url", "redis_url")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value:
            check_postgres_url(value)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value:
            check_redis_url(value)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FlatToml(settings_cls, config_files()))

    # ------------------------------------------------------------ slices
    # The one place the slices (echo.slices) are assembled. Each is built on every
    # read, not cached: `model_copy(update=...)` copies a cached value along, so a
    # copy with another redis_url would keep the old bus slice. A slice is a handful
    # of fields; building one costs microseconds, and components take it once.

    def _slice(self, kind: type[_S]) -> _S:
        return kind.model_validate({name: getattr(self, name) for name in kind.model_fields})

    @property
    def database(self) -> DatabaseSettings:
        """What `echo.db` and `echo.listener` read."""
        return self._slice(DatabaseSettings)

    @property
    def bus(self) -> BusSettings:
        """What the bus's transports, publisher and subscriber read."""
        return self._slice(BusSettings)

    @property
    def leases(self) -> LeaseSettings:
        """What the role leases read (this node, the lease's length, `prefer`)."""
        return self._slice(LeaseSettings)

    @property
    def work(self) -> WorkSettings:
        """What the task queue and the executor pool read."""
        return self._slice(WorkSettings)

    @property
    def claude(self) -> ClaudeSettings:
        """What a Claude run reads."""
        return self._slice(ClaudeSettings)

    @property
    def governor(self) -> GovernorSettings:
        """What the budgets read."""
        return self._slice(GovernorSettings)

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def public(self) -> dict[str, Any]:
        """The settings as a user may see them: secrets redacted."""
        data = self.model_dump(mode="json")
        for key in ("database_url", "redis_url"):
            if data[key]:
                data[key] = redact_url(data[key])
        return data

    def child_env(self) -> dict[str, str]:
        """Environment that makes a child process see exactly these settings."""
        env = {}
        for name, value in self.model_dump(mode="json").items():
            if value is not None:  # a list as JSON, which is how pydantic reads it back
                text = json.dumps(value) if isinstance(value, list | dict) else str(value)
                env[f"ECHO_{name.upper()}"] = text
        return env


#: The log levels a setting or `--log-level` may name (in any case).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def check_log_level(value: str) -> str:
    """`value` as a level name logging knows (upper case); ValueError saying what to use."""
    level = value.upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"use {', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]}")
    return level


class _FlatToml(InitSettingsSource):
    """config/*.toml, later files winning. A table is a prefix: `[budget] daily_usd` is
    the setting `budget_daily_usd` (ECHO_BUDGET_DAILY_USD), `[claude] account` is
    `claude_account`, so a file reads like the role files while the settings stay flat."""

    def __init__(self, settings_cls: type[BaseSettings], files: list[Path]) -> None:
        data: dict[str, Any] = {}
        for path in files:
            with path.open("rb") as handle:
                data.update(_flatten(tomllib.load(handle)))
        super().__init__(settings_cls, data)


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}_"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning every validation problem into one clear `ConfigError`."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = one_line(".".join(str(p) for p in first["loc"])) or "settings"
        raise ConfigError(
            f"bad setting {field} (ECHO_{field.upper()}): "
            f"{str(first['msg']).removeprefix('Value error, ')}; "
            f"fix it in the flag, the environment or {', '.join(map(str, config_files())) or 'config/'}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file is not valid TOML ({exc}); fix {config_files()}") from None
