"""Which tool calls need approval: Claude Code's permission-rule syntax, matched purely.

A rule is `Tool` (every call of the tool), `Tool(prefix:*)` (the call's subject
starts with `prefix`), `Tool(exact)` (the subject is exactly that), and, as the CLI
allows, `*` anywhere inside the parentheses as a wildcard (`Bash(git push * --force)`).
The subject of a call is what the CLI's own rules look at: a Bash call's command,
a file tool's `file_path` (or `notebook_path`, `path`), WebFetch's `url`, else the
input's JSON. An MCP tool (`mcp__server__tool`) is matched by its name only.

For Bash the rule is applied to every part of a compound command (split at `&&`,
`||`, `;`, `|`, `&`, newlines, `$(`, backquotes, parentheses and braces), with and
without what may lead the command itself (`VAR=value`, `then`, `do`, `!`, `time`,
`env`, `nohup`, `sudo`, ...), so `cd x && git push` and `if ok; then git push; fi` are
gated by `Bash(git push:*)`. The split ignores quoting: it can only find more parts,
which gates more calls, never fewer. A command can still hide a prefix from any
pattern (`bash -c "git push"`, `git -C . push`): prefix rules guard against mistakes;
gate the bare `Bash` tool where every command must wait (docs/approvals.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from echo.errors import ConfigError

_TOOL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$")
_RULE_RE = re.compile(r"^(?P<tool>[^()\s]+)(?:\((?P<content>.*)\))?$", re.DOTALL)
_SPLIT_RE = re.compile(r"&&|\|\||;|\||&|\n|\$\(|`|\(|\)|\{|\}")
#: What may stand before the command itself: assignments, and the shell's keywords and
#: wrappers that run the rest (`then git push`, `time git push`, `env git push`).
_LEAD_RE = re.compile(r"^(?:(?:[A-Za-z_][A-Za-z0-9_]*=\S*|then|do|else|elif|if|while|until|"
                      r"!|time|env|command|exec|nohup|builtin|sudo)\s+)+")
_PATH_KEYS = ("file_path", "notebook_path", "path")


@dataclass(frozen=True)
class Rule:
    """One parsed rule: the tool and, if any, the pattern its subject must match."""

    tool: str
    content: str | None = None

    def __str__(self) -> str:
        return self.tool if self.content is None else f"{self.tool}({self.content})"

    def matches(self, tool: str, tool_input: Mapping[str, Any]) -> bool:
        if tool != self.tool:
            return False
        if self.content is None or tool.startswith("mcp__"):
            return True
        subjects = _parts(subject(tool, tool_input)) if tool == "Bash" \
            else [subject(tool, tool_input)]
        return any(_content_matches(self.content, s) for s in subjects)


def parse_rule(text: str) -> Rule:
    """`text` as a `Rule`, or a `ConfigError` naming it and the syntax."""
    found = _RULE_RE.match(text.strip())
    if not found or not _TOOL_RE.match(found["tool"]) or found["content"] == "":
        raise ConfigError(f"approval rule {text!r} is not Tool, Tool(prefix:*) or "
                          "Tool(exact), e.g. \"Bash(git push:*)\"")
    return Rule(found["tool"], found["content"])


def parse_rules(texts: Iterable[str]) -> tuple[Rule, ...]:
    """Every rule parsed, duplicates dropped, in order."""
    return tuple(dict.fromkeys(parse_rule(t) for t in texts))


def gated(rules: Sequence[Rule], tool: str, tool_input: Mapping[str, Any]) -> Rule | None:
    """The first rule that makes this call need approval, or None (the call is free)."""
    for rule in rules:
        if rule.matches(tool, tool_input):
            return rule
    return None


def subject(tool: str, tool_input: Mapping[str, Any]) -> str:
    """What a rule's content is compared with, for one call."""
    if tool == "Bash":
        return str(tool_input.get("command", ""))
    for key in _PATH_KEYS:
        if isinstance(tool_input.get(key), str):
            return str(tool_input[key])
    if tool == "WebFetch" and isinstance(tool_input.get("url"), str):
        return str(tool_input["url"])
    return json.dumps(dict(tool_input), sort_keys=True)


def hook_matcher(rules: Sequence[Rule]) -> str:
    """The hook's `matcher` (a regex of tool names): only gated tools call the hook."""
    names = sorted({r.tool for r in rules})
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def _parts(command: str) -> list[str]:
    """Each part of a compound command, as written and without leading assignments
    (both: a rule matching either gates the call)."""
    parts = [p.strip() for p in _SPLIT_RE.split(command)]
    parts += [_LEAD_RE.sub("", p).strip() for p in parts]
    return [p for p in dict.fromkeys(parts) if p] or [command.strip()]


def _content_matches(content: str, value: str) -> bool:
    if content.endswith(":*"):
        return value.startswith(content[:-2])  # a prefix, as the CLI matches it
    if "*" in content:
        pattern = ".*".join(re.escape(piece) for piece in content.split("*"))
        return re.fullmatch(pattern, value, re.DOTALL) is not None
    return value == content
