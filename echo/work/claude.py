"""The Claude CLI executor: one task, one headless `claude -p --output-format json` run.

How a run is made (facts measured with @anthropic-ai/claude-code 2.1.197):

- the prompt goes in on stdin, which is then closed (an open stdin can hang the CLI);
- options are a list of arguments (`--model`, `--append-system-prompt`,
  `--allowedTools`, `--max-turns`, `--max-budget-usd`), never a shell string, and
  `--dangerously-skip-permissions` only when the role's options ask for it (a task
  payload cannot ask);
- the child runs in its own process group under the task's wall-clock timeout
  (`echo.work.process`), with a scrubbed environment: PATH, HOME, locale, proxies,
  ANTHROPIC_*, CLAUDE_CODE_*, DISABLE_*; never CLAUDECODE, the database URL or
  unrelated secrets; optionally its own CLAUDE_CONFIG_DIR, because concurrent
  sessions sharing ~/.claude.json can corrupt it;
- `CLAUDE_CODE_MAX_RETRIES` is kept low: the CLI otherwise retries a 401 or a 429
  for minutes while holding a worker slot, and the queue retries with backoff anyway.

How the outcome is read: exit status 0 and `is_error: false` is success (the JSON,
its `total_cost_usd` and `session_id` are stored). Otherwise `result` names the
failure: "Not logged in" and "Invalid API key" raise `ClaudeAuthError`, "Credit
balance is too low" `ClaudeCreditError` (never retried); "You've hit your [session|
weekly|Opus|usage] limit · resets …" `ClaudeUsageLimit` (retried at the reset; the CLI
prints it only for a claude.ai subscriber, from the 429's unified rate-limit headers);
`api_error_status` 429, 529 or 5xx `ClaudeApiError` (retried); no JSON at all `ClaudeCrashed` (retried).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from echo.config import Settings, project_path
from echo.errors import (
    ClaudeApiError,
    ClaudeAuthError,
    ClaudeCrashed,
    ClaudeCreditError,
    ClaudeError,
    ClaudeHeld,
    ClaudeNotInstalled,
    ClaudeTimeout,
    ClaudeUsageLimit,
)
from echo.work.executors import Result
from echo.work.governor.ledger import RunRecord, usage
from echo.work.process import ProcessResult, run_process, scrubbed_env
from echo.work.queue import Task
from echo.work.workspaces.tools import in_workspace

#: The project-local CLI that `make setup` installs from tools/claude/package.json.
LOCAL_CLAUDE = project_path("tools") / "claude" / "node_modules" / ".bin" / "claude"
_ENV_PREFIXES = ("ANTHROPIC_", "CLAUDE_CODE_", "CLAUDE_CONFIG_DIR", "DISABLE_",
                 "MAX_THINKING_TOKENS", "MCP_TIMEOUT", "MCP_TOOL_TIMEOUT", "BASH_")
_CLOUD_PREFIXES = ("AWS_", "CLOUD_ML_", "GOOGLE_", "VERTEX_", "ANTHROPIC_VERTEX_")
_SECRET_RE = re.compile(r"sk-ant-[A-Za-z0-9_\-]+")


@dataclass(frozen=True)
class ClaudeRunOptions:
    """How one role runs the CLI; mirrors the `[claude]` table of agents/<role>/role.toml
    (plus the role's system prompt, appended to Claude Code's own)."""

    model: str | None = None
    system_prompt: str | None = None
    allowed_tools: Sequence[str] = field(default_factory=tuple)
    max_turns: int | None = None
    max_budget_usd: float | None = None
    skip_permissions: bool = False
    account: str | None = None  # the credentials' name (plan pauses); None: the process's
    permission_mode: str | None = None  # `--permission-mode` (acceptEdits in a workspace)
    workspace_tools: Sequence[str] | None = None  # the role's `[workspace] tools`


#: What a task's payload may override under "claude"; never permissions or tools.
PAYLOAD_OPTIONS = frozenset({"model", "max_turns", "max_budget_usd"})


def resolve_claude_bin(settings: Settings, *, local: Path | None = LOCAL_CLAUDE) -> str:
    """`settings.claude_bin` (ECHO_CLAUDE_BIN) if it is a path or on PATH, else the
    project-local CLI; otherwise one clear `ClaudeNotInstalled`."""
    wanted = settings.claude_bin
    if os.sep in wanted:
        if os.access(wanted, os.X_OK) and Path(wanted).is_file():
            return wanted
    else:
        found = shutil.which(wanted)
        if found:
            return found
        if local is not None and os.access(local, os.X_OK):
            return str(local)
    raise ClaudeNotInstalled(
        f"the Claude CLI {wanted!r} was not found; install it with "
        "`npm install -g @anthropic-ai/claude-code` (or `make setup` for the project-local "
        "copy) or point ECHO_CLAUDE_BIN at the `claude` binary"
    )


def claude_env(extra: Mapping[str, str] | None = None,
               source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: what the CLI needs and nothing else."""
    source = os.environ if source is None else source
    prefixes: tuple[str, ...] = _ENV_PREFIXES
    if source.get("CLAUDE_CODE_USE_BEDROCK") or source.get("CLAUDE_CODE_USE_VERTEX"):
        prefixes += _CLOUD_PREFIXES
    env = scrubbed_env(extra, prefixes=prefixes, source=source)
    env.pop("CLAUDECODE", None)
    return env


def redact(text: str, env: Mapping[str, str]) -> str:
    """Remove API keys and tokens from text that may end up in an error or a log."""
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"):
        secret = env.get(name)
        if secret and len(secret) >= 8:
            text = text.replace(secret, "***")
    return _SECRET_RE.sub("sk-ant-***", text)


_RESET_RE = re.compile(
    r"resets\s+(?:at\s+)?(?:([a-z]{3})[a-z]*\.?\s+(\d{1,2}),?\s+(?:(\d{4}),?\s+)?)?"
    r"(\d{1,2})(?::(\d{2}))?\s*([ap]m)?(?:\s*\(([^)]+)\))?", re.IGNORECASE)
#: "You've hit your limit", "… your session limit", "… weekly limit", "… Opus limit",
#: "… usage limit", "… org's monthly usage limit" (2.1.197 names the plan's window);
#: "You're out of usage credits · resets …".
_USAGE_LIMIT_RE = re.compile(
    r"\bhit your\b[^·\n]{0,40}?\blimit\b|\busage limit\b|\bout of usage credits\b",
    re.IGNORECASE)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def usage_limit_reset(message: str, now: datetime | None = None) -> datetime:
    """When "You've hit your limit · resets 3pm (Europe/London)" lifts, as an aware
    datetime a minute past the reset; an hour from now if the time cannot be read.

    The CLI (2.1.197) prints the time alone when the reset is within 24 hours
    ("resets 2:32pm (UTC)", the next such time) and the date too when it is later
    ("resets Nov 27, 11am (UTC)", with ", 2027" when the year differs)."""
    now = now or datetime.now(UTC)
    match = _RESET_RE.search(message)
    if not match:
        return now + timedelta(hours=1)
    month_name, day, year = match[1], match[2], match[3]
    hour, minute = int(match[4]), int(match[5] or 0)
    if match[6]:
        hour = hour % 12 + (12 if match[6].lower() == "pm" else 0)
    if hour > 23 or minute > 59:
        return now + timedelta(hours=1)
    tz: Any = UTC
    if match[7]:
        try:
            tz = ZoneInfo(match[7].strip())
        except (ZoneInfoNotFoundError, ValueError):
            tz = datetime.now().astimezone().tzinfo
    else:
        tz = datetime.now().astimezone().tzinfo
    local_now = now.astimezone(tz)
    if month_name:
        if month_name.lower() not in _MONTHS:
            return now + timedelta(hours=1)
        try:
            reset = datetime(int(year) if year else local_now.year,
                             _MONTHS.index(month_name.lower()) + 1, int(day), hour, minute,
                             tzinfo=tz)
        except ValueError:
            return now + timedelta(hours=1)
    else:
        # The CLI shows the reset rounded down to the minute, so the shown minute may be
        # the current one: only a time whose whole minute has passed means tomorrow.
        reset = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if reset + timedelta(minutes=1) <= local_now:
            reset += timedelta(days=1)
    return (reset + timedelta(minutes=1)).astimezone(UTC)


def _last_json(stdout: bytes) -> dict[str, Any] | None:
    for line in reversed(stdout.decode(errors="replace").strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
    return None


def classify(done: ProcessResult, *, timeout: float, env: Mapping[str, str]) -> Result:
    """Turn a finished CLI run into a `Result`, or raise the `ClaudeError` leaf it is."""
    if done.timed_out:
        raise ClaudeTimeout(f"claude did not finish within {timeout:g}s; "
                            "its process group was killed")
    data = _last_json(done.stdout)
    if data is None:
        how = f"was killed by signal {done.signal}" if done.signal else \
              f"exited with status {done.returncode}"
        tail = redact(done.stderr.decode(errors="replace").strip()[-300:], env)
        raise ClaudeCrashed(f"claude {how} without a JSON result" + (f": {tail}" if tail else ""))
    if done.returncode == 0 and not data.get("is_error"):
        cost = data.get("total_cost_usd")
        return Result(data, float(cost) if isinstance(cost, int | float) else None,
                      data.get("session_id"))
    text = redact(str(data.get("result") or data.get("subtype") or "unknown error"), env)[:500]
    status = data.get("api_error_status")
    lowered = text.lower()
    if "not logged in" in lowered or "invalid api key" in lowered or status in (401, 403):
        raise ClaudeAuthError(f"claude is not authenticated ({text}); set ANTHROPIC_API_KEY "
                              "or run `claude /login` as the worker's user")
    if "credit balance is too low" in lowered:
        raise ClaudeCreditError(f"the Anthropic account is out of credit ({text}); "
                                "add credit, then `echoctl tasks retry ID`")
    if _USAGE_LIMIT_RE.search(text):
        reset = usage_limit_reset(text)
        raise ClaudeUsageLimit(f"usage limit reached ({text}); retrying after "
                               f"{reset:%Y-%m-%d %H:%M} UTC", reset)
    if isinstance(status, int):
        retryable = status in (408, 409, 429) or status >= 500
        raise ClaudeApiError(f"the Anthropic API answered {status}: {text}", status,
                             retryable=retryable)
    subtype = str(data.get("subtype") or "")
    if subtype.startswith("error_max"):
        raise ClaudeApiError(f"claude stopped: {subtype} ({text})", None, retryable=False)
    raise ClaudeApiError(f"claude failed: {text}", None, retryable=True)


async def run_claude(argv: list[str], *, prompt: str, env: Mapping[str, str], cwd: Any,
                     time_limit: float, kill_grace: float, record: RunRecord) -> Result:
    """One CLI run, classified, with its ledger row: on the `Result` (`run`), or on the
    `ClaudeError` raised (`exc.run`: outcome class, cost, tokens, the pause a usage
    limit asks for). A run that never reached the API is a row too, with cost 0."""
    started = datetime.now(UTC)
    clock = time.monotonic()
    done = await run_process(argv, stdin=prompt.encode(), env=env, cwd=cwd,
                             time_limit=time_limit, kill_grace=kill_grace)
    ran = replace(record, started_at=started, duration_ms=int((time.monotonic() - clock) * 1000))
    try:
        result = classify(done, timeout=time_limit, env=env)
    except ClaudeError as exc:
        data = _last_json(done.stdout)
        if data is not None:
            ran = replace(ran, **usage(data))
        exc.run = ran.with_failure(exc, datetime.now(UTC))
        raise
    return replace(result, run=replace(ran, **usage(result.output)))


class ClaudeExecutor:
    """Runs `claude` for `claude` tasks. `options` gives a task's run options (usually
    from its role); `config_dir` becomes CLAUDE_CONFIG_DIR, one subfolder per slot
    when `config_dir_per_slot`; `env` is added to the scrubbed environment."""

    def __init__(
        self,
        settings: Settings,
        *,
        options: Callable[[Task], ClaudeRunOptions] | ClaudeRunOptions | None = None,
        config_dir: Path | None = None,
        config_dir_per_slot: bool = False,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        cli_max_retries: int | None = 1,
        kill_grace: float = 5.0,
        local_bin: Path | None = LOCAL_CLAUDE,
    ) -> None:
        self.settings = settings
        self._options = options or ClaudeRunOptions()
        self.config_dir = config_dir
        self.config_dir_per_slot = config_dir_per_slot
        self.cwd = cwd
        self.extra_env = dict(env or {})
        self.cli_max_retries = cli_max_retries
        self.kill_grace = kill_grace
        self.local_bin = local_bin

    def binary(self) -> str:
        """The CLI this executor runs; `ClaudeNotInstalled` if there is none."""
        return resolve_claude_bin(self.settings, local=self.local_bin)

    def options_for(self, task: Task) -> ClaudeRunOptions:
        base = self._options(task) if callable(self._options) else self._options
        wanted = task.payload.get("claude") or {}
        known = {f.name for f in fields(ClaudeRunOptions)}
        overrides = {k: v for k, v in wanted.items() if k in PAYLOAD_OPTIONS and k in known}
        return in_workspace(replace(base, **overrides) if overrides else base, task)

    def argv(self, binary: str, options: ClaudeRunOptions) -> list[str]:
        argv = [binary, "-p", "--output-format", "json"]
        if options.model:
            argv += ["--model", options.model]
        if options.system_prompt:
            argv += ["--append-system-prompt", options.system_prompt]
        if options.allowed_tools:
            argv += ["--allowedTools", ",".join(options.allowed_tools)]
        if options.max_turns:
            argv += ["--max-turns", str(options.max_turns)]
        if options.max_budget_usd:
            argv += ["--max-budget-usd", f"{options.max_budget_usd:g}"]
        if options.permission_mode:
            argv += ["--permission-mode", options.permission_mode]
        if options.skip_permissions:
            argv.append("--dangerously-skip-permissions")
        return argv

    def environment(self, task: Task) -> dict[str, str]:
        extra = dict(self.extra_env)
        if self.config_dir is not None:
            folder = self.config_dir
            if self.config_dir_per_slot:
                folder = folder / re.sub(r"[^A-Za-z0-9_.-]", "_", task.worker_id)
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            extra["CLAUDE_CONFIG_DIR"] = str(folder)
        if self.cli_max_retries is not None:
            extra.setdefault("CLAUDE_CODE_MAX_RETRIES", str(self.cli_max_retries))
        return claude_env(extra)

    def budgeted(self, task: Task, options: ClaudeRunOptions) -> ClaudeRunOptions:
        """Billing by API key, a run may spend at most what is left of its budgets
        (`--max-budget-usd` = the smaller of the role's per-run cap and that)."""
        left = task.budget_left_usd
        if self.settings.claude_billing != "api" or left is None:
            return options
        cap = left if options.max_budget_usd is None else min(options.max_budget_usd, left)
        return replace(options, max_budget_usd=max(round(cap, 4), 0.0001))

    def record(self, task: Task, options: ClaudeRunOptions) -> RunRecord:
        workflow = task.payload.get("workflow")
        return RunRecord(kind="task", outcome="ok",
                         account=options.account or self.settings.claude_account,
                         role=task.role, task_id=task.task_id, attempt=task.attempt,
                         workflow_id=workflow if isinstance(workflow, str) else None,
                         model=options.model,
                         estimated=self.settings.claude_billing == "subscription")

    async def execute(self, task: Task) -> Result:
        binary = self.binary()
        prompt = str(task.payload.get("prompt") or task.description)
        env = self.environment(task)
        base = self.options_for(task)
        options = self.budgeted(task, base)
        try:
            return await run_claude(
                self.argv(binary, options), prompt=prompt, env=env,
                cwd=task.payload.get("workspace") or self.cwd or task.payload.get("cwd"),
                time_limit=task.timeout_seconds,
                kill_grace=self.kill_grace, record=self.record(task, options))
        except ClaudeApiError as exc:
            if options.max_budget_usd == base.max_budget_usd or exc.run is None \
                    or exc.run.outcome != "max_budget":
                raise
            # Cut at what was left of its budget, not at the role's own cap: the task
            # waits (uncounted) until the budget allows it, as if it had not started.
            held = ClaudeHeld(f"stopped at --max-budget-usd {options.max_budget_usd:g}, what "
                              "was left of its budget; it runs again when the budget allows")
            held.retry_at, held.run = datetime.now(UTC), exc.run
            raise held from exc
        except FileNotFoundError:
            raise ClaudeNotInstalled(
                f"the Claude CLI {binary!r} disappeared; reinstall "
                "@anthropic-ai/claude-code or fix ECHO_CLAUDE_BIN") from None


def login_hint(env: Mapping[str, str] | None = None) -> str | None:
    """Where the CLI would find credentials, without calling the API; None if nowhere.

    Used to say up front which mode a run is in. It is a hint: only a real run can
    tell that a key is valid, and every run classifies that failure on its own.
    """
    env = os.environ if env is None else env
    if env.get("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_AUTH_TOKEN"):
        return "ANTHROPIC_API_KEY"
    if env.get("CLAUDE_CODE_USE_BEDROCK") or env.get("CLAUDE_CODE_USE_VERTEX"):
        return "cloud provider (Bedrock/Vertex)"
    config = Path(env.get("CLAUDE_CONFIG_DIR") or Path(env.get("HOME", "~")).expanduser() / ".claude")
    if (config / ".credentials.json").is_file():
        return f"login in {config}"
    return None
