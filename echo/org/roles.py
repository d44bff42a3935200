"""Roles are data: one folder per role under `agents/`, holding `role.toml`.

This module is the one place that says which roles exist (`role_names`), checks a
name a user typed (`check_role`, one message naming the roles that exist) and
loads a role's configuration (`load_role`, `load_roles`). The rule for a role's
name itself (`ROLE_RE`, `ROLE_RULE`) lives with the message envelope, which the bus
validates without knowing the organisation.

Nothing in the code lists the roles. A user adds a seventh by adding a folder
with a `role.toml` and a copy of the launcher; `load_roles` finds it. A role file
that does not validate is a `ConfigError` naming the file and the field, so a
typo never starts a half-configured agent.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from echo.approval_rules import parse_rules
from echo.bus.envelope import ROLE_RE, ROLE_RULE
from echo.errors import ConfigError, UnknownRole, one_line
from echo.work.workspaces.tools import DEFAULT_TOOLS

#: The `echo` MCP server's tools a role's runs may be given (echo/mcp/tools.py has
#: them; tests/unit/mcp keeps the two in step). None of them decides an approval,
#: raises a budget or acts as another role.
ROLE_ECHO_TOOLS = ("broadcast", "send", "ask", "messages", "thread", "submit_task", "task",
                   "start_workflow", "workflow", "decisions", "status", "spend",
                   "request_budget")


class ClaudeOptions(BaseModel):
    """How this role runs the Claude CLI. Permission bypass is opt-in per role."""

    model_config = ConfigDict(extra="forbid")

    model: str = "sonnet"
    allowed_tools: list[str] = Field(default_factory=lambda: ["Read", "Grep", "Glob"])
    max_turns: int = Field(8, ge=1, le=200)
    max_budget_usd: float | None = Field(None, gt=0)
    skip_permissions: bool = False
    idle_timeout: float | None = Field(
        None, gt=0, description="seconds without an event before the watchdog kills a run "
        "(default: ECHO_CLAUDE_IDLE_TIMEOUT)")
    account: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$",
        description="the Claude credentials this role runs with (default: ECHO_CLAUDE_ACCOUNT)")
    echo_tools: list[str] | None = Field(
        None, description="the organisation's MCP tools this role's runs may call "
        "(echo/org/agent/reach.py); unset: all of the role's, [] for none")
    @field_validator("echo_tools")
    @classmethod
    def _known_tools(cls, value: list[str] | None) -> list[str] | None:
        for name in value or ():
            if name not in ROLE_ECHO_TOOLS:
                raise ValueError(f"unknown echo tool {name!r}; use some of: "
                                 f"{', '.join(ROLE_ECHO_TOOLS)}")
        return value

    isolate_config: bool = Field(
        False,
        description="one CLAUDE_CONFIG_DIR per worker slot (needs ANTHROPIC_API_KEY: "
        "a fresh config dir holds no login)",
    )


class BudgetOptions(BaseModel):
    """The role's daily Claude budget (USD); `echoctl budget set --role` overrides it."""

    model_config = ConfigDict(extra="forbid")

    daily_usd: float | None = Field(None, ge=0)


class WorkspaceOptions(BaseModel):
    """How this role works in a task's git worktree (`tasks submit --repo`): these
    tools, with `--permission-mode acceptEdits`, confined to the worktree."""

    model_config = ConfigDict(extra="forbid")

    tools: list[str] = Field(default_factory=lambda: list(DEFAULT_TOOLS))


class ApprovalOptions(BaseModel):
    """Tool calls of this role's runs that wait for an operator's approval, in Claude
    Code's permission-rule syntax (`Bash(git push:*)`, `Write`, `mcp__github__merge`);
    added to the organisation's `approval_tools`."""

    model_config = ConfigDict(extra="forbid")

    tools: list[str] = Field(default_factory=list)

    @field_validator("tools")
    @classmethod
    def _rules(cls, value: list[str]) -> list[str]:
        try:
            return [str(rule) for rule in parse_rules(value)]
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class WorkOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(1, ge=0, le=64)


class Role(BaseModel):
    """One role's configuration, from agents/<name>/role.toml."""

    model_config = ConfigDict(extra="forbid")

    name: str
    title: str = Field(min_length=1)
    start_order: int = Field(100, description="staggered start order; ties by name")
    responsibilities: list[str] = Field(min_length=1)
    keywords: list[str] = Field(min_length=1)
    system_prompt: str = Field(min_length=1)
    claude: ClaudeOptions = ClaudeOptions()
    work: WorkOptions = WorkOptions()
    workspace: WorkspaceOptions = WorkspaceOptions()
    budget: BudgetOptions = BudgetOptions()
    approval: ApprovalOptions = ApprovalOptions()

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not ROLE_RE.match(value):
            raise ValueError(ROLE_RULE)
        return value

    @field_validator("keywords")
    @classmethod
    def _lowercase(cls, value: list[str]) -> list[str]:
        return [k.strip().lower() for k in value if k.strip()]


#: Senders that are not agents: a person at `echoctl`, and ECHO itself.
NON_AGENT_SENDERS: tuple[str, ...] = ("operator", "system")


def role_dirs(agents_dir: Path) -> list[Path]:
    if not agents_dir.is_dir():
        return []
    return sorted(p for p in agents_dir.iterdir() if (p / "role.toml").is_file())


def role_names(agents_dir: Path) -> list[str]:
    """The roles that exist, by folder name, without parsing them."""
    return [p.name for p in role_dirs(agents_dir)]


def load_role_file(path: Path) -> Role:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read role file ({exc}); fix the TOML") from None
    data.setdefault("name", path.parent.name)
    try:
        role = Role.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = one_line(".".join(str(p) for p in first["loc"])) or "role"
        raise ConfigError(f"{path}: {field}: {first['msg']}; fix the role file") from None
    if role.name != path.parent.name:
        raise ConfigError(
            f"{path}: name {role.name!r} differs from its folder {path.parent.name!r}; make them the same"
        )
    return role


def load_roles(agents_dir: Path) -> dict[str, Role]:
    """Every role under `agents_dir`, by name, in start order."""
    roles = [load_role_file(p / "role.toml") for p in role_dirs(agents_dir)]
    return {r.name: r for r in sorted(roles, key=lambda r: (r.start_order, r.name))}


def unknown_role(name: str, agents_dir: Path, allow: tuple[str, ...] = ()) -> UnknownRole:
    """The one message for a role that does not exist: what exists, and where."""
    known = [*role_names(agents_dir), *allow]
    if not role_names(agents_dir):
        return UnknownRole(f"unknown role {one_line(name)!r}: no roles found under {agents_dir} "
                           "(set ECHO_AGENTS_DIR)")
    return UnknownRole(f"unknown role {one_line(name)!r}; known roles: {', '.join(known)}")


def check_role(name: str, agents_dir: Path, *, allow: tuple[str, ...] = ()) -> str:
    """`name` if it is a role of this organisation (or one of `allow`), else `UnknownRole`."""
    if name in allow or (ROLE_RE.match(name) and (agents_dir / name / "role.toml").is_file()):
        return name
    raise unknown_role(name, agents_dir, allow)


def load_role(agents_dir: Path, name: str) -> Role:
    """One role, or `UnknownRole` naming the roles that exist."""
    check_role(name, agents_dir)
    return load_role_file(agents_dir / name / "role.toml")
