"""How a finished CLI run is read: a `Result`, or the `ClaudeError` leaf it is.

How the outcome is read (from the stream's last line, `result`, which is what the
json format printed): exit status 0 and `is_error: false` is success (the JSON,
its `total_cost_usd` and `session_id` are stored). Otherwise `result` names the
failure: "Not logged in" and "Invalid API key" raise `ClaudeAuthError`, "Credit
balance is too low" `ClaudeCreditError` (never retried); "You've hit your [session|
weekly|Opus|usage] limit · resets …" `ClaudeUsageLimit` (retried at the reset, to the
second when the stream's `rate_limit_event` carried it; the CLI prints the text only
for a claude.ai subscriber, from the 429's unified rate-limit headers);
`api_error_status` 429, 529 or 5xx `ClaudeApiError` (retried); no JSON at all `ClaudeCrashed` (retried).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from echo.errors import (
    ClaudeApiError,
    ClaudeAuthError,
    ClaudeCrashed,
    ClaudeCreditError,
    ClaudeDeferred,
    ClaudeTimeout,
    ClaudeUsageLimit,
)
from echo.work.executors import Result
from echo.work.limits import announced_reset, usage_limit_reset
from echo.work.process import ProcessResult

_SECRET_RE = re.compile(r"sk-ant-[A-Za-z0-9_\-]+")


def redact(text: str, env: Mapping[str, str]) -> str:
    """Remove API keys and tokens from text that may end up in an error or a log."""
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"):
        secret = env.get(name)
        if secret and len(secret) >= 8:
            text = text.replace(secret, "***")
    return _SECRET_RE.sub("sk-ant-***", text)


#: "You've hit your limit", "… your session limit", "… weekly limit", "… Opus limit",
#: "… usage limit", "… org's monthly usage limit" (2.1.197 names the plan's window);
#: "You're out of usage credits · resets …".
_USAGE_LIMIT_RE = re.compile(
    r"\bhit your\b[^·\n]{0,40}?\blimit\b|\busage limit\b|\bout of usage credits\b",
    re.IGNORECASE)


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


def deferred_call(result: Mapping[str, Any]) -> str:
    """The tool call a deferred run stopped at, in a few words: `Bash: git push`."""
    call = result.get("deferred_tool_use") or {}
    tool_input = call.get("input") if isinstance(call, dict) else None
    shown = ""
    if isinstance(tool_input, dict):
        shown = str(tool_input.get("command") or tool_input.get("file_path") or "")
    name = call.get("name", "a tool") if isinstance(call, dict) else "a tool"
    return f"{name}: {shown[:200]}" if shown else str(name)


def classify(done: ProcessResult, *, timeout: float, env: Mapping[str, str],
             now: datetime | None = None, resets_at: datetime | None = None) -> Result:
    """Turn a finished CLI run into a `Result`, or raise the `ClaudeError` leaf it is.

    `resets_at` is the reset a refused `rate_limit_event` streamed, to the second; a
    usage limit waits for it, or, without one, for the reset its text shows (read
    against `now`, the wall clock by default)."""
    if done.timed_out:
        raise ClaudeTimeout(f"claude did not finish within {timeout:g}s; "
                            "its process group was killed")
    data = _last_json(done.stdout)
    if data is None:
        how = f"was killed by signal {done.signal}" if done.signal else \
              f"exited with status {done.returncode}"
        tail = redact(done.stderr.decode(errors="replace").strip()[-300:], env)
        raise ClaudeCrashed(f"claude {how} without a JSON result" + (f": {tail}" if tail else ""))
    if done.returncode == 0 and not data.get("is_error") \
            and data.get("terminal_reason") == "tool_deferred":
        raise ClaudeDeferred(f"awaiting approval: {deferred_call(data)}; "
                             "`echoctl approvals list` shows the request")
    if done.returncode == 0 and not data.get("is_error"):
        cost = data.get("total_cost_usd")
        return Result(data, float(cost) if isinstance(cost, int | float) else None,
                      data.get("session_id"))
    errors = data.get("errors")
    said = data.get("result") or ("; ".join(map(str, errors)) if isinstance(errors, list) else "")
    text = redact(str(said or data.get("subtype") or "unknown error"), env)[:500]
    status = data.get("api_error_status")
    lowered = text.lower()
    if "not logged in" in lowered or "invalid api key" in lowered or status in (401, 403):
        raise ClaudeAuthError(f"claude is not authenticated ({text}); set ANTHROPIC_API_KEY "
                              "or run `claude /login` as the worker's user")
    if "credit balance is too low" in lowered:
        raise ClaudeCreditError(f"the Anthropic account is out of credit ({text}); "
                                "add credit, then `echoctl tasks retry ID`")
    if _USAGE_LIMIT_RE.search(text) or (resets_at is not None and status == 429):
        reset = announced_reset(resets_at, now) or usage_limit_reset(text, now)
        raise ClaudeUsageLimit(f"usage limit reached ({text}); retrying after "
                               f"{reset:%Y-%m-%d %H:%M:%S} UTC", reset)
    if isinstance(status, int):
        retryable = status in (408, 409, 429) or status >= 500
        raise ClaudeApiError(f"the Anthropic API answered {status}: {text}", status,
                             retryable=retryable)
    subtype = str(data.get("subtype") or "")
    if subtype.startswith("error_max"):
        raise ClaudeApiError(f"claude stopped: {subtype} ({text})", None, retryable=False)
    raise ClaudeApiError(f"claude failed: {text}", None, retryable=True)
