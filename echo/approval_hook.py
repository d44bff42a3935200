"""The PreToolUse hook of a gated run: `python -m echo.approval_hook CONFIG`.

A top-level module, beside the pure rules it matches (`echo.approval_rules`), so that
a call no rule gates costs the interpreter's start and no more: importing `echo.work`
(the database driver, the executors) is left to the gated calls, which need it.

The Claude CLI runs this command (through its shell, every path quoted) before each
call of a tool the role gates, with the call as JSON on stdin (`tool_name`,
`tool_input`, `tool_use_id`, `session_id`, `transcript_path`). CONFIG is a JSON
file, readable by its owner only, in the run's private directory: the database's slice
of the settings (the organisation's database and namespace, `echo.slices`), the task,
the role, the rules and the request timeout (`echo.approval_hooks.install`).

The answer (checked with the pinned CLI 2.1.197):

- a call no rule gates: nothing printed, exit 0, so the CLI's own permissions apply;
- a gated call: `{"hookSpecificOutput": {"hookEventName": "PreToolUse",
  "permissionDecision": "defer" | "allow" | "deny", "permissionDecisionReason": ...}}`.
  `defer` ends a `-p` run at once (its result says `terminal_reason: tool_deferred`,
  the call not made); `claude -p --resume` asks again, and on `allow` makes the call;
  on `deny` the run is told the reason as the call's result and goes on.
- the CLI ignores `defer` for a call that shares its message with other tool calls
  ("defer is solo-only"); such a call is denied, telling the run to make it alone;
- anything going wrong (the database down, a bad CONFIG): `deny`, with one line.
  A gated call never runs by accident.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from echo.approval_rules import Rule, gated, parse_rules


def answer(decision: str, reason: str) -> str:
    return json.dumps({"hookSpecificOutput": {
        "hookEventName": "PreToolUse", "permissionDecision": decision,
        "permissionDecisionReason": reason}})


def batch_size(transcript: str | None, tool_use_id: str | None) -> int:
    """How many tool calls the assistant message holding this call makes (1 if unknown).
    The CLI may write one message's blocks on several lines, all with the message's id."""
    if not transcript or not tool_use_id:
        return 1
    try:
        lines = Path(transcript).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return 1
    messages: dict[str, set[str]] = {}
    holding = None
    for line in lines[-400:]:
        try:
            message = json.loads(line).get("message") or {}
            content = message.get("content")
        except (ValueError, AttributeError):
            continue
        if not isinstance(content, list):
            continue
        key = str(message.get("id") or id(message))
        calls = {str(b.get("id")) for b in content if isinstance(b, dict) and b.get("type") == "tool_use"}
        messages.setdefault(key, set()).update(calls)
        if tool_use_id in calls:
            holding = key
    return max(1, len(messages[holding])) if holding is not None else 1


def gate(config: dict[str, Any], call: dict[str, Any]) -> tuple[str, dict[str, Any], Rule | None]:
    """The call's tool, its input, and the rule that gates it (None: the call is free)."""
    rules = parse_rules(config.get("rules", []))
    tool = str(call.get("tool_name") or "")
    tool_input = call.get("tool_input") or {}
    if not isinstance(tool_input, dict):
        tool_input = {"input": tool_input}
    return tool, tool_input, gated(rules, tool, tool_input)


async def decide(config: dict[str, Any], call: dict[str, Any]) -> str | None:
    """The hook's output for `call` (None: say nothing)."""
    tool, tool_input, rule = gate(config, call)
    if rule is None:
        return None
    if batch_size(call.get("transcript_path"), call.get("tool_use_id")) > 1:
        return answer("deny", f"{tool} needs an operator's approval ({rule}); make this call "
                      "alone, in a message with no other tool call, to ask for it")
    from echo.db import Database
    from echo.slices import DatabaseSettings
    from echo.work.approvals.store import ApprovalStore

    settings = DatabaseSettings.model_validate(config["database"])
    database = await Database.open(settings, min_size=1, max_size=1)
    try:
        got = await ApprovalStore(database).check_call(
            task_id=int(config["task_id"]), role=config.get("role"), tool=tool,
            tool_input=tool_input, session_id=call.get("session_id"),
            tool_use_id=call.get("tool_use_id"), expires_in=float(config["timeout"]))
    finally:
        with contextlib.suppress(Exception):  # the decision stands: a close never overrides it
            await database.close()
    request = got.approval
    if request is None:
        return answer("deny", got.reason)
    if got.decision == "allow":
        return answer("allow", f"approved by {request.decided_by} (request {request.id})")
    if got.decision == "deny":
        who = f" by {request.decided_by}" if request.decided_by not in (None, "system") else ""
        return answer("deny", f"an operator's approval was refused{who} (request "
                      f"{request.id}): {got.reason}. Do not try this call again; go on "
                      "without it, or stop and say why")
    return answer("defer", f"{tool} needs an operator's approval ({rule}): request {request.id}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        config = json.loads(Path(args[0]).read_text(encoding="utf-8"))
        call = json.loads(sys.stdin.read() or "{}")
        if gate(config, call)[2] is None:
            return 0  # free: say nothing, so the CLI's own permissions apply
        import anyio  # only now: a call no rule gates never needs it

        out = anyio.run(decide, config, call)
    except Exception as exc:  # never allow by accident: any failure refuses the call
        line = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        out = answer("deny", f"the approval check failed ({line}); the call was not made")
    if out is not None:
        sys.stdout.write(out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
