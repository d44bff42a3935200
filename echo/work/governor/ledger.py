"""The ledger's row: what one Claude run was, and how it ended.

Every Claude run is one `claude_runs` row: a task attempt (written by the work
queue in the statement that stores the task's result or failure) or a workflow
question (written by the decider right after it). A run that never reached the
API (not logged in) is a row too, with cost 0: the ledger counts attempts, and the
spend is the sum of what each cost.

Rows travel to Postgres as one JSON array per statement (`ledger_rows`), which
`claude_runs_rows` (010_governor.sql) turns into table rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from echo.errors import (
    ClaudeApiError,
    ClaudeAuthError,
    ClaudeCrashed,
    ClaudeCreditError,
    ClaudeDeferred,
    ClaudeError,
    ClaudeHung,
    ClaudeLoop,
    ClaudeTimeout,
    ClaudeUsageLimit,
)

#: max_budget: the CLI stopped the run at its --max-budget-usd; hung: the watchdog saw
#: no event for the idle timeout; loop: the same tool call repeated (echo.work.runs);
#: deferred: the run stopped at a tool call awaiting approval (echo.work.approvals).
Outcome = Literal["ok", "auth", "credit", "usage_limit", "rate_limited", "overloaded",
                  "api_error", "max_budget", "timeout", "crash", "hung", "loop", "deferred"]

#: After the reset the CLI announces (to the second from the stream; from its text,
#: already rounded up to the next whole minute), a margin for clocks that disagree;
#: and the shortest pause, so a limit that is still there after its reset never turns
#: into a busy loop.
PAUSE_MARGIN = timedelta(seconds=5)
MIN_PAUSE = timedelta(seconds=30)


@dataclass(frozen=True)
class RunRecord:
    """One Claude run, as the ledger stores it. `pause_until` (a usage limit) also
    pauses `account` until then."""

    kind: Literal["task", "question"]
    outcome: Outcome
    account: str = "default"
    role: str | None = None
    task_id: int | None = None
    attempt: int | None = None
    workflow_id: str | None = None
    step: str | None = None
    model: str | None = None
    started_at: datetime | None = None
    duration_ms: int | None = None
    cost_usd: float = 0.0
    input_tokens: int | None = None
    output_tokens: int | None = None
    turns: int | None = None
    session_id: str | None = None
    estimated: bool = False
    pause_until: datetime | None = None
    pause_reason: str | None = None
    resumed_attempt: int | None = None  # the attempt whose session this run continued

    def with_failure(self, exc: ClaudeError, now: datetime) -> RunRecord:
        """This run, ended by `exc`: its outcome class, and the pause a usage limit asks for."""
        outcome = outcome_of(exc)
        if outcome != "usage_limit" or exc.retry_at is None:
            return replace(self, outcome=outcome)
        until = max(exc.retry_at + PAUSE_MARGIN, now + MIN_PAUSE)
        return replace(self, outcome=outcome, pause_until=until, pause_reason=limit_name(str(exc)))


def outcome_of(exc: BaseException) -> Outcome:
    if isinstance(exc, ClaudeAuthError):
        return "auth"
    if isinstance(exc, ClaudeCreditError):
        return "credit"
    if isinstance(exc, ClaudeUsageLimit):
        return "usage_limit"
    if isinstance(exc, ClaudeHung):
        return "hung"
    if isinstance(exc, ClaudeDeferred):
        return "deferred"
    if isinstance(exc, ClaudeLoop):
        return "loop"
    if isinstance(exc, ClaudeTimeout):
        return "timeout"
    if isinstance(exc, ClaudeCrashed):
        return "crash"
    if "error_max_budget_usd" in str(exc):
        return "max_budget"
    if isinstance(exc, ClaudeApiError):
        if exc.status == 429:
            return "rate_limited"
        if exc.status == 529:
            return "overloaded"
    return "api_error"


_LIMITS = ("session limit", "weekly limit", "opus limit", "usage limit", "monthly usage limit")


def limit_name(message: str) -> str:
    """Which plan window a usage-limit message names ("session limit", ...)."""
    lowered = message.lower()
    for name in sorted(_LIMITS, key=len, reverse=True):
        if name in lowered:
            return name
    return "usage limit"


def usage(data: dict[str, Any]) -> dict[str, Any]:
    """Tokens, turns, model and duration from the CLI's JSON result."""
    raw_tokens, raw_models = data.get("usage"), data.get("modelUsage")
    tokens: dict[str, Any] = raw_tokens if isinstance(raw_tokens, dict) else {}
    models: dict[str, Any] = raw_models if isinstance(raw_models, dict) else {}
    if models and not tokens.get("input_tokens"):  # a failed run reports zeros in `usage`
        tokens = {"input_tokens": sum(int(m.get("inputTokens") or 0) for m in models.values()),
                  "output_tokens": sum(int(m.get("outputTokens") or 0) for m in models.values())}
    cost = data.get("total_cost_usd")

    def number(value: Any) -> int | None:
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    found = {
        "cost_usd": float(cost) if isinstance(cost, int | float) else 0.0,
        "input_tokens": number(tokens.get("input_tokens")),
        "output_tokens": number(tokens.get("output_tokens")),
        "turns": number(data.get("num_turns")),
        "session_id": data.get("session_id") if isinstance(data.get("session_id"), str) else None,
        "model": next(iter(models), None) if models else None,
    }
    return {k: v for k, v in found.items() if v is not None}


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def ledger_rows(runs: list[RunRecord]) -> list[dict[str, Any]] | None:
    """The array `claude_runs_rows` reads (a jsonb parameter: the connection's codec
    encodes it); None when there is nothing to write."""
    if not runs:
        return None
    return [{k: _plain(v) for k, v in asdict(r).items() if v is not None} for r in runs]
