"""Settings slices: the part of the settings each component reads.

`echo.config.Settings` is the loader: it reads config/*.toml, the ECHO_* environment
and flags, and validates every value. A component does not take all of it. It takes
the slice it reads (`DatabaseSettings` for `echo.db`, `BusSettings` for the bus's
transports and publisher, ...), as an OTP child spec carries its own arguments:

- each component declares, in its signature, the settings it depends on, and a
  reader sees at once that the pool never looks at Claude's budget;
- a test or a bench builds the one slice it needs, with the values it means, without
  the environment or a TOML file that could change them behind its back;
- `echo.db`, `echo.listener`, `echo.bus` and `echo.work` no longer import the
  loader (an import-linter contract keeps it so).

The layers above (the agent's tree, the node, the commands, the console) read many
slices and keep taking `Settings`; they hand each component below them its slice.
The console's host and port reach its keeper as `ConsoleOptions`
(echo.org.node.console_keeper), which is that slice already.

The slices are assembled in one place, the properties of `Settings`
(`settings.database`, `settings.bus`, ...), from settings already validated there.
So the slices repeat neither the validators nor the defaults: every field is
required, and its meaning, default and `ECHO_<NAME>` variable are the field of the
same name in `Settings`. The slices are frozen: a variant is `model_copy(update=...)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict


class _Slice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatabaseSettings(_Slice):
    """Where the organisation's Postgres is and how to talk to it (`echo.db`,
    `echo.listener`). `state_dir` holds the embedded server when `database_url` is unset."""

    database_url: str | None
    namespace: str
    state_dir: Path
    pool_size: int
    connect_timeout: float
    command_timeout: float


class BusSettings(_Slice):
    """The message bus: its real-time transport (Redis or NOTIFY), its polls and its
    limits (`echo.bus`)."""

    redis_url: str | None
    namespace: str
    connect_timeout: float
    command_timeout: float
    poll_interval: float
    max_body_bytes: int
    catchup_timeout: float


class LeaseSettings(_Slice):
    """Role leases: who this node is, how long a lease lasts, and which roles it takes
    back when it returns (`echo.org.leases`, the lease keeper, the standby)."""

    node: str
    lease_seconds: float
    lease_renew_interval: float
    lease_takeover_grace: float
    prefer: str

    @property
    def preferred_roles(self) -> set[str]:
        """The roles this node takes back from another node (`--prefer`, ECHO_PREFER)."""
        return {name.strip() for name in self.prefer.split(",") if name.strip()}


class WorkSettings(_Slice):
    """The task queue and the executor pool (`echo.work`); `node` and `state_dir` are
    where a worker keeps its worktrees (`workspace_place`)."""

    worker_check_interval: float
    max_task_bytes: int
    node: str
    state_dir: Path


class ClaudeSettings(_Slice):
    """How a Claude run is started, watched and recorded (`echo.work.claude`)."""

    claude_bin: str
    claude_account: str
    claude_billing: Literal["api", "subscription"]
    claude_idle_timeout: float
    claude_result_grace: float
    claude_loop_repeats: int
    claude_events_per_run: int
    claude_events_retention_days: float
    workflow_conversation: Literal["kept", "resumed", "off"]
    approval_tools: tuple[str, ...]
    approval_timeout: float


class GovernorSettings(_Slice):
    """The budgets that gate Claude's spending (`echo.work.governor`)."""

    budget_daily_usd: float | None
    budget_timezone: str
    budget_burst_usd: float | None
    budget_burst_minutes: float
    claude_account: str
    claude_billing: Literal["api", "subscription"]
