"""Deciders: how an agent answers a workflow's questions, with Claude or without it.

Every question (take part? a position, a vote, the CEO's decision) is first put to
the Claude CLI as a short prompt from `shared/prompts/<step>.md` that asks for ONE
JSON object, under the workflow's `decider_timeout`. The run is the executor's
(`ClaudeExecutor.argv`, `run_process`, `classify`), so it has the same scrubbed
environment, process group and kill on timeout, and its failures are the same
`ClaudeError` leaves.

When Claude cannot answer (not installed, not logged in, out of credit, too slow,
or an answer that is not the JSON asked for), the deterministic fallback answers
instead, and says so: an `Answer` carries `source` ("llm" or "fallback") and the
reason the LLM was not used. Self-selection falls back to keyword scoring against
the role's `keywords`; positions, votes and the decision fall back to templates
built from the role's responsibilities, never dressed up as an LLM's words.

One conversation per role per workflow (`settings.workflow_conversation`): the first
question of a workflow starts a session, whose id is recorded (`Conversations`, the
`workflow_sessions` table); every later question of that workflow continues it with
only the new step's prompt, so the role remembers its earlier positions. `kept` (the
default) asks them of one CLI process kept for the workflow (echo.work.runs.kept: one
start instead of one a question), until the workflow closes, the agent stops or a
question fails; the next process resumes the session (`--resume`), so a restarted
agent continues it too. `resumed` starts a process per question, resuming the
session; `off`, a fresh process and session per question (as before). When the CLI
will not resume a session (its transcript is gone, the conversation is too long), one
warning line says why and the question is asked afresh.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from echo.config import Settings
from echo.errors import (
    ClaudeAuthError,
    ClaudeCreditError,
    ClaudeError,
    ClaudeHeld,
    ClaudeNotInstalled,
    StoreRejected,
    StoreUnavailable,
)
from echo.org.agent import reach
from echo.org.agent.answers import Answer, parse_json_object
from echo.org.roles import Role
from echo.work.claude import ClaudeExecutor, ClaudeRunOptions, run_claude
from echo.work.claude_cli import LOCAL_CLAUDE, claude_env, mcp_waits
from echo.work.executors import Result
from echo.work.governor import Governor, RunRecord
from echo.work.runs.attempt import refused
from echo.work.runs.kept import KeptSession
from echo.work.runs.stream import RunEvent

log = logging.getLogger(__name__)

#: Failures that mean "no Claude here", as opposed to one bad run.
CLAUDE_UNAVAILABLE: tuple[type[ClaudeError], ...] = (ClaudeNotInstalled, ClaudeAuthError,
                                                     ClaudeCreditError)
#: Kept CLI processes a decider holds at most (one per open workflow); past it, the one
#: used longest ago ends (its session is resumed at its next question).
MAX_KEPT = 4


# ------------------------------------------------------------------ the LLM


class Conversations(Protocol):
    """Where a role's session of each workflow is kept (`WorkflowStore`)."""

    async def conversation(self, workflow_id: str, role: str) -> str | None: ...

    async def record_conversation(self, workflow_id: str, role: str, session_id: str) -> None: ...


class ClaudeDecider:
    """Asks the Claude CLI one question as the role would (its model and system prompt).

    "No Claude here" (not installed, not logged in, no credit) is believed for
    `unavailable_for` seconds: within that, a question fails at once with the same
    reason instead of starting a CLI only to hear it again (each start costs about a
    second of CPU, and a workflow asks every role several questions). A login or a
    top-up is noticed at the first question after that.
    """

    def __init__(self, settings: Settings, role: Role, *, env: Mapping[str, str] | None = None,
                 local_bin: Path | None = LOCAL_CLAUDE, unavailable_for: float = 60.0,
                 governor: Governor | None = None, mcp_config: Path | None = None,
                 conversations: Conversations | None = None, otel: Any = None) -> None:
        self.unavailable_for = unavailable_for
        self.settings = settings
        self.role_name = role.name
        self.account = role.claude.account or settings.claude_account
        #: Budgets and pauses hold questions too (the fallback answers, reason `budget`),
        #: and every question's run is a ledger row.
        self.governor = governor
        self.runs = 0  # CLI processes started
        self.resumed = 0  # questions that continued the workflow's session
        #: One session per workflow (None, or the setting off: a fresh process per question).
        self.mode = settings.workflow_conversation if conversations is not None else "off"
        self.conversations = conversations if self.mode != "off" else None
        self._kept: dict[str, KeptSession] = {}  # by workflow, the last used last
        self._unavailable: tuple[float, ClaudeError] | None = None
        # One short turn, no tools: a JSON answer is all that is asked for.
        self.options = ClaudeRunOptions(model=role.claude.model, system_prompt=role.system_prompt,
                                        max_turns=2, **reach.run_options(role, mcp_config))
        isolated = settings.state_dir / "claude" / role.name / "decider"
        self.executor = ClaudeExecutor(settings.claude, settings.database, options=self.options,
                                       env=env, cli_max_retries=0,
                                       config_dir=isolated if role.claude.isolate_config else None,
                                       local_bin=local_bin, otel=otel)

    async def ask(self, prompt: str, time_limit: float, *, workflow: str | None = None,
                  step: str | None = None) -> dict[str, Any]:
        await self._check(workflow)
        if self._unavailable is not None:
            since, known = self._unavailable
            if time.monotonic() - since < self.unavailable_for:
                raise type(known)(str(known))
            self._unavailable = None
        try:
            return await self._ask(prompt, time_limit, workflow, step)
        except CLAUDE_UNAVAILABLE as exc:
            self._unavailable = (time.monotonic(), exc)
            raise

    async def _check(self, workflow: str | None) -> None:
        if self.governor is None:
            return
        try:
            await self.governor.check(self.role_name, workflow)
        except (StoreUnavailable, StoreRejected) as exc:
            # The workflow's own writes wait for the database; the question need not.
            log.warning("governor unreachable (%s); asking anyway", exc)

    async def _record(self, run: RunRecord | None) -> None:
        if self.governor is None or run is None:
            return
        try:
            await self.governor.record([run])
        except (StoreUnavailable, StoreRejected) as exc:
            log.warning("could not write the ledger row of a %s question: %s", run.step, exc)

    async def _ask(self, prompt: str, time_limit: float, workflow: str | None,
                   step: str | None) -> dict[str, Any]:
        """The question, in the workflow's session when there is one, else afresh."""
        session = await self._session(workflow)
        if session is not None:
            started: list[RunEvent] = []
            try:
                result = await self._run(prompt, time_limit, workflow, step, session,
                                         started.append)
            except ClaudeError as exc:
                if not refused(exc, started=any(e.kind == "init" for e in started)):
                    raise
                log.warning("%s: cannot resume session %s of workflow %s (%s); asking afresh",
                            self.role_name, session, workflow, str(exc)[:200])
            else:
                self.resumed += 1
                return await self._answer_of(result, workflow, session)
        result = await self._run(prompt, time_limit, workflow, step, None, None)
        return await self._answer_of(result, workflow, None)

    async def _session(self, workflow: str | None) -> str | None:
        if self.conversations is None or workflow is None:
            return None
        try:
            return await self.conversations.conversation(workflow, self.role_name)
        except (StoreUnavailable, StoreRejected) as exc:
            log.warning("%s: the session of workflow %s cannot be looked up (%s); asking "
                        "afresh", self.role_name, workflow, exc)
            return None

    async def _answer_of(self, result: Result, workflow: str | None,
                         resumed: str | None) -> dict[str, Any]:
        """Remember the run's session for the workflow's later questions; the answer."""
        if self.conversations is not None and workflow is not None and result.session_id \
                and result.session_id != resumed:
            try:
                await self.conversations.record_conversation(workflow, self.role_name,
                                                              result.session_id)
            except (StoreUnavailable, StoreRejected) as exc:
                log.warning("%s: the session of workflow %s is not recorded (%s); its next "
                            "question starts afresh", self.role_name, workflow, exc)
        return parse_json_object(str((result.output or {}).get("result") or ""))

    async def _run(self, prompt: str, time_limit: float, workflow: str | None,
                   step: str | None, resume: str | None,
                   on_event: Callable[[RunEvent], None] | None) -> Result:
        binary = self.executor.binary()
        extra = dict(self.executor.extra_env)
        extra["CLAUDE_CODE_MAX_RETRIES"] = "0"
        if self.executor.config_dir is not None:
            self.executor.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            extra["CLAUDE_CONFIG_DIR"] = str(self.executor.config_dir)
        env = claude_env(extra)
        kept = await self._kept_for(workflow, binary, env, resume)
        if kept is None or not kept.alive:
            self.runs += 1
        record = RunRecord(kind="question", outcome="ok", account=self.account,
                           role=self.role_name, workflow_id=workflow, step=step,
                           model=self.options.model,
                           estimated=self.settings.claude_billing == "subscription")
        try:
            result = await run_claude(self.executor.argv(binary, self.options, resume=resume),
                                      prompt=prompt, env=env, cwd=self.executor.cwd,
                                      time_limit=time_limit, kill_grace=2.0, record=record,
                                      on_event=on_event, otel=self.executor.otel, kept=kept)
        except FileNotFoundError:
            await self.forget(workflow)
            raise ClaudeNotInstalled(f"the Claude CLI {binary!r} disappeared") from None
        except ClaudeError as exc:
            await self.forget(workflow)  # it ended with the failure; the next one resumes
            await self._record(exc.run)
            raise
        await self._record(result.run)
        return result


    async def _kept_for(self, workflow: str | None, binary: str, env: Mapping[str, str],
                        resume: str | None) -> KeptSession | None:
        """The workflow's kept process (`kept` mode), a new one (to resume `resume`) if it
        has none or it has exited."""
        if self.mode != "kept" or workflow is None:
            return None
        kept = self._kept.pop(workflow, None)
        if kept is not None and not kept.alive:
            await kept.close()
            kept = None
        if kept is None:
            argv = self.executor.argv(binary, self.options, resume=resume, stream_input=True)
            kept = KeptSession(argv, env={**env, **mcp_waits(argv, env)}, cwd=self.executor.cwd,
                               kill_grace=2.0)
        self._kept[workflow] = kept
        while len(self._kept) > MAX_KEPT:
            await self.forget(next(iter(self._kept)))
        return kept

    @property
    def kept(self) -> int:
        """Kept CLI processes running now."""
        return sum(k.alive for k in self._kept.values())

    async def forget(self, workflow: str | None) -> None:
        """End the workflow's kept process, if any (its session stays recorded)."""
        kept = self._kept.pop(workflow, None) if workflow is not None else None
        if kept is not None:
            await kept.close()

    async def keep_only(self, workflows: set[str]) -> None:
        """End the kept processes of workflows no longer open."""
        for workflow in [w for w in self._kept if w not in workflows]:
            await self.forget(workflow)

    async def close(self) -> None:
        """End every kept process (the agent stops)."""
        for workflow in list(self._kept):
            await self.forget(workflow)


async def answer(decider: ClaudeDecider | None, prompt: str, time_limit: float,
                 check: Callable[[dict[str, Any]], dict[str, Any]],
                 fallback: Callable[[], dict[str, Any]], *, workflow: str | None = None,
                 step: str | None = None) -> Answer:
    """The LLM's checked answer, else the fallback's with the reason (a spent budget or
    a paused account: the governor's own words, `budget — cto spent $6.30 of $5.00 today`)."""
    if decider is None:
        return Answer(fallback(), "fallback", "no LLM decider configured")
    try:
        return Answer(check(await decider.ask(prompt, time_limit, workflow=workflow, step=step)),
                      "llm")
    except (ClaudeError, ValueError, OSError) as exc:
        reason = (str(exc) if isinstance(exc, ClaudeHeld) else f"{type(exc).__name__}: {exc}")[:500]
        log.info("LLM decider unavailable (%s); using the fallback", reason)
        return Answer(fallback(), "fallback", reason)
