"""Approvals: tool calls, merges and budget raises that wait for an operator's yes.

A role's `[approval] tools` (and the organisation's `ECHO_APPROVAL_TOOLS`) name tool
calls in Claude Code's permission-rule syntax (`policy`). Each Claude run of such a
role gets a PreToolUse hook (`hook`, installed by `settings_for`) that looks the call
up in the `approvals` table (`store`): the first time it records a pending request
and answers `defer`, which ends the `-p` run at once with the call not made; the
task then waits as `awaiting_approval` and holds no process and no worker slot.
An operator decides (`echoctl approvals`, the console); the task is queued again
and its next attempt resumes the session, where the CLI asks the hook once more:
approved, the call runs (once: the request is then `used`); denied or expired, it
is refused with the reason and the run goes on without it.
"""

from echo.approval_rules import Rule, gated, parse_rule, parse_rules
from echo.work.approvals.store import (
    KINDS,
    STATES,
    Approval,
    ApprovalStore,
)

__all__ = ["KINDS", "STATES", "Approval", "ApprovalStore", "Rule", "gated", "parse_rule",
           "parse_rules"]
