"""The Claude CLI executor: one task attempt, one headless `claude -p` run, read as it streams.

How a run is made (facts measured with @anthropic-ai/claude-code 2.1.197):

- the prompt goes in on stdin, which is then closed (an open stdin can hang the CLI);
- options are a list of arguments (`--model`, `--append-system-prompt`,
  `--allowedTools`, `--max-turns`, `--max-budget-usd`), never a shell string, and
  `--dangerously-skip-permissions` only when the role's options ask for it (a task
  payload cannot ask);
- the child runs in its own process group under the task's wall-clock timeout
  (`echo.work.process`), with a scrubbed environment: PATH, HOME, locale, proxies,
  ANTHROPIC_*, CLAUDE_CODE_*, DISABLE_*; never CLAUDECODE, the database URL or
  unrelated secrets (`echo.work.claude_cli`); optionally its own CLAUDE_CONFIG_DIR,
  because concurrent sessions sharing ~/.claude.json can corrupt it;
- `CLAUDE_CODE_MAX_RETRIES` is kept low: the CLI otherwise retries a 401 or a 429
  for minutes while holding a worker slot, and the queue retries with backoff anyway.

Every run is `-p --output-format stream-json --verbose`, read line by line by the
watchdog (`echo.work.runs.watch`): no event for the idle timeout is `ClaudeHung`
(retried), the same tool call over and over `ClaudeLoop` (not retried). With a store
(`attach`, done by the pool), the run's session, events and transcript are recorded
as it goes, and a retry resumes the earlier attempt's session (`--resume`, the
transcript restored from Postgres first) instead of starting over.

The outcome is read by `echo.work.claude_outcome`: success, or the `ClaudeError` the
run's last line names (auth, credit, usage limit, API status, a crash).
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from echo.db import Database
from echo.errors import (
    ClaudeApiError,
    ClaudeError,
    ClaudeHeld,
    ClaudeHung,
    ClaudeLoop,
    ClaudeNotInstalled,
    StoreRejected,
    StoreUnavailable,
)
from echo.slices import ClaudeSettings, DatabaseSettings
from echo.work.approvals import ApprovalStore, Rule, parse_rules
from echo.work.approvals.install import hook_folder, hook_settings
from echo.work.approvals.store import decision_note
from echo.work.claude_cli import LOCAL_CLAUDE, claude_env, mcp_waits, resolve_claude_bin
from echo.work.claude_outcome import classify
from echo.work.executors import Result
from echo.work.governor.ledger import RunRecord, usage
from echo.work.runs import (
    PgRunStore,
    RunEvent,
    RunRecorder,
    RunStore,
    Streamed,
    Watch,
    run_streaming,
)
from echo.work.runs.attempt import run_attempt
from echo.work.runs.kept import KeptSession
from echo.work.runs.traces import RunSpans, tracer
from echo.work.tasks import Task
from echo.work.workspaces.tools import in_workspace

log = logging.getLogger(__name__)


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
    idle_timeout: float | None = None  # the watchdog's; None: settings.claude_idle_timeout
    permission_mode: str | None = None  # `--permission-mode` (acceptEdits in a workspace)
    workspace_tools: Sequence[str] | None = None  # the role's `[workspace] tools`
    #: The `echo` MCP server of the run's role (echo/org/agent/reach.py): `--mcp-config`, and
    #: the permission rules of the tools it may call there.
    mcp_config: str | None = None
    mcp_tools: Sequence[str] = field(default_factory=tuple)
    approval_tools: Sequence[str] = field(default_factory=tuple)  # the role's `[approval] tools`
    settings_file: str | None = None  # `--settings`: the run's approval hook (set per run)


#: What a task's payload may override under "claude"; never permissions or tools.
PAYLOAD_OPTIONS = frozenset({"model", "max_turns", "max_budget_usd"})



def _watched(streamed: Streamed, *, timeout: float, watch: Watch,
             env: Mapping[str, str]) -> Result:
    """`classify`, after what the watchdog stopped: a hang or a loop."""
    if streamed.stopped == "hung":
        raise ClaudeHung(f"claude printed nothing for {watch.idle_timeout:g}s (turn "
                         f"{streamed.state.turn}); the watchdog killed its process group")
    if streamed.stopped == "loop":
        raise ClaudeLoop(f"claude made the same tool call {watch.loop_repeats} times in a row "
                         f"({streamed.state.looping}); stopped, not retried")
    return classify(streamed.done, timeout=timeout, env=env,
                    resets_at=streamed.state.limit_resets_at)


def _ignore(event: RunEvent) -> None:
    return None


async def run_claude(argv: list[str], *, prompt: str, env: Mapping[str, str], cwd: Any,
                     time_limit: float, kill_grace: float, record: RunRecord,
                     watch: Watch | None = None,
                     on_event: Callable[[RunEvent], None] | None = None,
                     otel: Any = None, kept: KeptSession | None = None) -> Result:
    """One CLI run, watched and classified, with its ledger row: on the `Result` (`run`),
    or on the `ClaudeError` raised (`exc.run`: outcome class, cost, tokens, the pause a
    usage limit asks for). A run that never reached the API is a row too, with cost 0;
    one the watchdog stopped before its result costs the stream's list-price estimate.
    `otel` (a tracer; default: OTLP when configured, else none) gets its GenAI spans.
    With `kept`, the question goes to that kept process (started with its own argv, at
    its first question) instead of a new one."""
    watch = watch or Watch()
    spans = RunSpans(otel if otel is not None else tracer(), role=record.role,
                     model=record.model, task_id=record.task_id, attempt=record.attempt,
                     workflow_id=record.workflow_id)
    forward = on_event or _ignore

    def seen(event: RunEvent) -> None:
        spans.on_event(event)
        forward(event)

    started = datetime.now(UTC)
    clock = time.monotonic()
    try:
        if kept is not None:  # its environment was set at its start (`mcp_waits` too)
            streamed = await kept.ask(prompt, time_limit=time_limit, watch=watch, on_event=seen)
        else:
            streamed = await run_streaming(argv, stdin=prompt.encode(),
                                           env={**env, **mcp_waits(argv, env), **spans.env()},
                                           cwd=cwd, time_limit=time_limit,
                                           kill_grace=kill_grace, watch=watch, on_event=seen)
    except BaseException as exc:
        spans.end(None, exc)
        raise
    state = streamed.state
    ran = replace(record, started_at=started, duration_ms=int((time.monotonic() - clock) * 1000),
                  session_id=state.session_id or record.session_id)
    try:
        result = _watched(streamed, timeout=time_limit, watch=watch, env=env)
    except ClaudeError as exc:
        if state.result is not None:
            ran = replace(ran, **usage(state.result))
        elif state.turn:
            ran = replace(ran, cost_usd=round(state.cost_usd, 6), turns=state.turn)
        exc.run = ran.with_failure(exc, datetime.now(UTC))
        spans.end(exc.run, exc)
        raise
    done = replace(result, run=replace(ran, **usage(result.output)))
    spans.end(done.run)
    return done


class ClaudeExecutor:
    """Runs `claude` for `claude` tasks. `options` gives a task's run options (usually
    from its role); `config_dir` becomes CLAUDE_CONFIG_DIR, one subfolder per slot
    when `config_dir_per_slot`; `env` is added to the scrubbed environment.
    `settings` is Claude's slice; `database` is where a gated run's approval hook
    connects, and its state directory holds the hook's files."""

    def __init__(
        self,
        settings: ClaudeSettings,
        database: DatabaseSettings,
        *,
        options: Callable[[Task], ClaudeRunOptions] | ClaudeRunOptions | None = None,
        config_dir: Path | None = None,
        config_dir_per_slot: bool = False,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        cli_max_retries: int | None = 1,
        kill_grace: float = 5.0,
        local_bin: Path | None = LOCAL_CLAUDE,
        store: RunStore | None = None,
        otel: Any = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self._options = options or ClaudeRunOptions()
        self.config_dir = config_dir
        self.config_dir_per_slot = config_dir_per_slot
        self.cwd = cwd
        self.extra_env = dict(env or {})
        self.cli_max_retries = cli_max_retries
        self.kill_grace = kill_grace
        self.local_bin = local_bin
        #: Where runs are recorded and sessions found; None: not recorded, never resumed.
        self.store = store
        self.otel = otel  # a tracer for the runs' spans (tests); None: OTLP if configured
        self._purged = 0.0
        #: The organisation's gated tool calls (a bad rule stops the worker at its start).
        self.approval_rules = parse_rules(settings.approval_tools)
        #: Where approval decisions are read (set by `attach`); None: not read.
        self.approvals: ApprovalStore | None = None

    def attach(self, database: Database) -> None:
        """Record runs in `database` (the pool calls this with its own)."""
        if self.store is None:
            self.store = PgRunStore(database)
        if self.approvals is None:
            self.approvals = ApprovalStore(database)

    def binary(self) -> str:
        """The CLI this executor runs; `ClaudeNotInstalled` if there is none."""
        return resolve_claude_bin(self.settings, local=self.local_bin)

    def options_for(self, task: Task) -> ClaudeRunOptions:
        base = self._options(task) if callable(self._options) else self._options
        wanted = task.payload.get("claude") or {}
        known = {f.name for f in fields(ClaudeRunOptions)}
        overrides = {k: v for k, v in wanted.items() if k in PAYLOAD_OPTIONS and k in known}
        return in_workspace(replace(base, **overrides) if overrides else base, task)

    def argv(self, binary: str, options: ClaudeRunOptions, *,
             resume: str | None = None, stream_input: bool = False) -> list[str]:
        argv = [binary, "-p", "--output-format", "stream-json", "--verbose"]
        if stream_input:  # a kept process: questions as JSON lines on stdin (kept.py)
            argv += ["--input-format", "stream-json"]
        if resume:
            argv += ["--resume", resume]
        if options.model:
            argv += ["--model", options.model]
        if options.system_prompt:
            argv += ["--append-system-prompt", options.system_prompt]
        tools = list(options.allowed_tools)
        if options.mcp_config:  # only this server: none of the user's own MCP configs
            argv += ["--mcp-config", options.mcp_config, "--strict-mcp-config"]
            tools += options.mcp_tools
        if tools:
            argv += ["--allowedTools", ",".join(tools)]
        if options.max_turns:
            argv += ["--max-turns", str(options.max_turns)]
        if options.max_budget_usd:
            argv += ["--max-budget-usd", f"{options.max_budget_usd:g}"]
        if options.permission_mode:
            argv += ["--permission-mode", options.permission_mode]
        if options.settings_file:  # the approval hook (echo.work.approvals)
            argv += ["--settings", options.settings_file]
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

    def rules_for(self, options: ClaudeRunOptions) -> tuple[Rule, ...]:
        """The tool calls of this run that need approval: the organisation's and the role's."""
        return tuple(dict.fromkeys((*self.approval_rules, *parse_rules(options.approval_tools))))

    async def execute(self, task: Task) -> Result:
        rules = self.rules_for(self.options_for(task))
        if not rules:
            return await self._execute(task, None, None)
        folder = hook_folder(self.database.state_dir, task.task_id)  # 0700: the run's own
        try:
            hook = hook_settings(self.database, folder, task_id=task.task_id, role=task.role,
                                 rules=rules, timeout=self.settings.approval_timeout)
            return await self._execute(task, str(hook), await self._decided(task))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    async def _decided(self, task: Task) -> str | None:
        """What the resumed run is told of the decision it waited for (None: nothing)."""
        if self.approvals is None:
            return None
        try:
            requests = await self.approvals.of_task(task.task_id)
        except (StoreUnavailable, StoreRejected) as exc:
            log.warning("task %s: cannot read its approval requests: %s", task.task_id, exc)
            return None
        decided = [r for r in requests if r.kind == "tool" and r.state != "pending"]
        return decision_note(decided[-1]) if decided else None

    async def _execute(self, task: Task, hook: str | None, decided: str | None) -> Result:
        binary = self.binary()
        prompt = str(task.payload.get("prompt") or task.description)
        env = self.environment(task)
        base = self.options_for(task)
        options = self.budgeted(task, base)
        if hook is not None:
            options = replace(options, settings_file=hook)
        cwd = task.payload.get("workspace") or self.cwd or task.payload.get("cwd")
        watch = Watch(idle_timeout=options.idle_timeout or self.settings.claude_idle_timeout,
                      result_grace=self.settings.claude_result_grace,
                      loop_repeats=self.settings.claude_loop_repeats)

        async def start(resume: str | None, text: str, recorder: RunRecorder | None,
                        resumed_attempt: int | None) -> Result:
            return await run_claude(
                self.argv(binary, options, resume=resume), prompt=text, env=env, cwd=cwd,
                time_limit=task.timeout_seconds, kill_grace=self.kill_grace,
                record=replace(self.record(task, options), resumed_attempt=resumed_attempt),
                watch=watch, on_event=recorder.add if recorder is not None else None,
                otel=self.otel)

        try:
            if self.store is None:
                return await start(None, prompt, None, None)
            await self._purge(self.store)
            return await run_attempt(self.store, task, prompt=prompt, env=env, cwd=cwd,
                                     limit=self.settings.claude_events_per_run, start=start,
                                     decided=decided)
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


    async def _purge(self, store: RunStore) -> None:
        """Retention: at most once an hour, events and transcripts past their days."""
        if time.monotonic() - self._purged < 3600 and self._purged:
            return
        self._purged = time.monotonic()
        try:
            await store.purge(self.settings.claude_events_retention_days * 86400)
        except (StoreUnavailable, StoreRejected) as exc:
            log.warning("cannot purge old run events: %s", exc)
