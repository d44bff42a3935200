"""Reading `claude -p --output-format stream-json --verbose` as it comes.

The CLI (2.1.197) prints one JSON object a line: `system/init` (with `session_id`)
first, then `assistant` messages (content blocks `text` and `tool_use`), `user`
messages (`tool_result` blocks) and, last, `result`, which carries what the json
format printed (cost, usage, subtype, is_error). `StreamState.feed(line)` turns one
line into the `RunEvent`s worth recording and keeps what the watchdog and the
executor need: the session, the turn, a running cost estimate, the result, and
whether the run is looping (the same tool call, name and input, `loop_repeats` times
in a row).

Pure logic, no I/O: unit-tested on plain lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: List prices per million tokens (input, output) by model family, for the running cost
#: shown while a run streams; the `result` event then gives the CLI's own figure.
PRICES = {"opus": (5.0, 25.0), "sonnet": (3.0, 15.0), "haiku": (1.0, 5.0)}
#: How much of a text block, a tool input and a tool result an event keeps.
TEXT_CHARS, INPUT_CHARS, RESULT_CHARS = 300, 120, 200
#: The input fields that name what a tool call is about, in the order looked for.
_SUBJECT_KEYS = ("file_path", "path", "notebook_path", "command", "pattern", "url", "query",
                 "description", "prompt")


@dataclass(frozen=True)
class RunEvent:
    """One thing a run did, as `claude_run_events` stores it."""

    kind: str  # init, text, tool_use, tool_result, result, watchdog, resume
    summary: str
    turn: int | None = None
    cost_usd: float | None = None
    session_id: str | None = None  # on `init`


def clip(text: str, limit: int) -> str:
    """`text` on one line, at most `limit` characters (… marks a cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def tool_summary(name: str, tool_input: Any) -> str:
    """`Edit src/api.py`, `Bash git status`: the tool and what its input is about."""
    if isinstance(tool_input, dict):
        for key in _SUBJECT_KEYS:
            value = tool_input.get(key)
            if isinstance(value, str) and value:
                return clip(f"{name} {value}", INPUT_CHARS)
        if not tool_input:
            return name
    return clip(f"{name} {json.dumps(tool_input, sort_keys=True, default=str)}", INPUT_CHARS)


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return json.dumps(content, default=str)


def estimate_cost(model: str | None, input_tokens: int, output_tokens: int) -> float:
    """List-price cost of the tokens (sonnet's prices for a model not recognised)."""
    name = (model or "").lower()
    price_in, price_out = next((p for family, p in PRICES.items() if family in name),
                               PRICES["sonnet"])
    return (input_tokens * price_in + output_tokens * price_out) / 1_000_000


@dataclass
class StreamState:
    """What the stream has said so far. `feed` each stdout line in order."""

    loop_repeats: int = 5
    session_id: str | None = None
    model: str | None = None
    turn: int = 0
    cost_usd: float = 0.0
    result: dict[str, Any] | None = None
    looping: str | None = None  # the tool call repeated, once it is a loop
    #: When a plan's refused limit lifts, to the second: the CLI's `rate_limit_event`
    #: carries the 429's reset header, while the result's text shows only the minute.
    limit_resets_at: datetime | None = None
    lines: int = 0
    _messages: set[str] = field(default_factory=set)
    _tokens: dict[str, tuple[int, int]] = field(default_factory=dict)
    _last_call: str | None = None
    _repeats: int = 0

    def feed(self, line: bytes | str) -> list[RunEvent]:
        """The events of one stdout line; a line that is not a JSON object gives none."""
        self.lines += 1
        try:
            data = json.loads(line)
        except ValueError:
            return []
        if not isinstance(data, dict):
            return []
        kind = data.get("type")
        if kind == "system" and data.get("subtype") == "init":
            self.session_id = data.get("session_id") or self.session_id
            self.model = data.get("model") or self.model
            return [RunEvent("init", clip(f"session {self.session_id} ({self.model}) in "
                                          f"{data.get('cwd', '?')}", TEXT_CHARS), 0, 0.0,
                             self.session_id)]
        if kind == "assistant":
            return self._assistant(data.get("message") or {})
        if kind == "user":
            return self._user(data.get("message") or {})
        if kind == "rate_limit_event":
            info = data.get("rate_limit_info")
            info = info if isinstance(info, dict) else {}
            resets = info.get("resetsAt")
            if info.get("status") == "rejected" and isinstance(resets, int | float):
                self.limit_resets_at = datetime.fromtimestamp(resets, UTC)
            return []
        if kind == "result":
            self.result = data
            cost = data.get("total_cost_usd")
            if isinstance(cost, int | float):
                self.cost_usd = float(cost)
            turns = data.get("num_turns")
            self.turn = max(self.turn, turns) if isinstance(turns, int) else self.turn
            what = "error" if data.get("is_error") else data.get("subtype", "done")
            text = clip(str(data.get("result") or ""), TEXT_CHARS - 40)
            return [RunEvent("result", f"{what}, {self.turn} turn(s), ${self.cost_usd:.4f}"
                             + (f": {text}" if text else ""), self.turn, self.cost_usd)]
        return []

    def _assistant(self, message: dict[str, Any]) -> list[RunEvent]:
        ident = str(message.get("id") or f"line{self.lines}")
        if ident not in self._messages:
            self._messages.add(ident)
            self.turn += 1
        usage = message.get("usage") or {}
        if isinstance(usage, dict):
            tokens_in = sum(int(usage.get(k) or 0) for k in (
                "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
            self._tokens[ident] = (tokens_in, int(usage.get("output_tokens") or 0))
            self.cost_usd = sum(estimate_cost(self.model or message.get("model"), i, o)
                                for i, o in self._tokens.values())
        events = []
        for block in message.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and str(block.get("text", "")).strip():
                events.append(RunEvent("text", clip(str(block["text"]), TEXT_CHARS),
                                       self.turn, self.cost_usd))
            elif block.get("type") == "tool_use":
                name = str(block.get("name", "?"))
                call = json.dumps([name, block.get("input")], sort_keys=True, default=str)
                self._repeats = self._repeats + 1 if call == self._last_call else 1
                self._last_call = call
                summary = tool_summary(name, block.get("input"))
                if self._repeats >= self.loop_repeats:
                    self.looping = summary
                events.append(RunEvent("tool_use", summary, self.turn, self.cost_usd))
        return events

    def _user(self, message: dict[str, Any]) -> list[RunEvent]:
        content = message.get("content")
        if not isinstance(content, list):
            return []
        events = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                text = _result_text(block.get("content"))
                text = clip(f"error: {text}" if block.get("is_error") else text, RESULT_CHARS)
                events.append(RunEvent("tool_result", text or "(empty)", self.turn,
                                       self.cost_usd))
        return events
