"""What a workflow's questions are answered with, whoever answers them: the prompts
(`render`, from shared/prompts), the checks an answer must pass (`check_*`: the one
JSON object each step asks for, trimmed to what Postgres stores), and the
deterministic fallbacks (`keyword_select`, `template_*`) that answer when Claude
cannot, marked `FALLBACK_MARK`, never dressed up as a model's words.

Pure (no process, no database): echo.org.agent.deciders puts the question to the Claude CLI
and falls back to these; the workflow's participant and driver check and fall back
with the same functions, and their unit tests call them directly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from string import Template
from typing import Any

from echo.org.roles import Role
from echo.paths import project_path

FALLBACK_MARK = "[fallback, no LLM]"


@dataclass(frozen=True)
class Answer:
    data: dict[str, Any]
    source: str  # "llm" or "fallback"
    fallback_reason: str | None = None

    @property
    def decider(self) -> str:
        """How self-selection names its decider: llm or keyword."""
        return "llm" if self.source == "llm" else "keyword"


def render(step: str, **values: object) -> str:
    """The prompt of `step` from shared/prompts, with `$name` fields filled in."""
    text = (project_path("shared") / "prompts" / f"{step}.md").read_text(encoding="utf-8")
    return Template(text).safe_substitute({k: str(v) for k, v in values.items()})


def parse_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in `text` (models sometimes wrap it in prose or fences)."""
    start = text.find("{")
    while start != -1:
        try:
            data, _ = json.JSONDecoder().raw_decode(text[start:])
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(data, dict):
            return data
        start = text.find("{", start + 1)
    raise ValueError(f"no JSON object in the answer: {text[:200]!r}")


# ------------------------------------------------------------------ validators


def checked_text(data: Mapping[str, Any], key: str, limit: int = 2000) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"the answer has no text {key!r}")
    return value.replace("\x00", "").strip()[:limit]  # Postgres cannot store NUL


def check_select(data: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(data.get("participate"), bool):
        raise ValueError("the answer has no boolean 'participate'")
    confidence = data.get("confidence", 0.5)
    if not isinstance(confidence, int | float) or isinstance(confidence, bool):
        raise ValueError("'confidence' is not a number")
    return {"participate": data["participate"], "confidence": min(1.0, max(0.0, float(confidence))),
            "reason": checked_text(data, "reason", 500)}


def check_position(data: Mapping[str, Any]) -> dict[str, Any]:
    return {"position": checked_text(data, "position")}


def check_vote(data: Mapping[str, Any]) -> dict[str, Any]:
    if data.get("vote") not in ("approve", "reject"):
        raise ValueError("'vote' is neither approve nor reject")
    return {"vote": data["vote"], "reason": checked_text(data, "reason", 500)}


def check_decision(data: Mapping[str, Any], roles: list[str]) -> dict[str, Any]:
    if data.get("outcome") not in ("approved", "rejected"):
        raise ValueError("'outcome' is neither approved nor rejected")
    tasks = []
    for item in data.get("tasks") or []:
        if isinstance(item, dict) and item.get("role") in roles and str(item.get("description", "")).strip():
            description = str(item["description"]).replace("\x00", "").strip()[:2000]
            tasks.append({"role": item["role"], "description": description})
    if data["outcome"] == "rejected":
        tasks = []
    return {"outcome": data["outcome"], "summary": checked_text(data, "summary", 4000), "tasks": tasks}


# ------------------------------------------------------------------ fallbacks


def keyword_matches(role: Role, text: str) -> list[str]:
    lowered = text.lower()
    return [k for k in role.keywords if re.search(rf"(?<![a-z0-9]){re.escape(k)}(?![a-z0-9])", lowered)]


def keyword_select(role: Role, subject: str, body: str) -> dict[str, Any]:
    """Take part when at least one of the role's keywords is in the subject or body."""
    found = keyword_matches(role, f"{subject}\n{body}")
    if not found:
        return {"participate": False, "confidence": 0.0,
                "reason": "no keyword of this role in the subject or body"}
    return {"participate": True, "confidence": min(1.0, 0.4 + 0.2 * len(found)),
            "reason": f"keywords matched: {', '.join(found)}"}


def template_position(role: Role, subject: str, round_no: int, others: list[str]) -> dict[str, Any]:
    heard = f" I have read the positions of {', '.join(others)}." if others else ""
    duties = "; ".join(role.responsibilities)
    return {"position": f"{FALLBACK_MARK} As {role.title} I take part in '{subject}' (round "
                        f"{round_no}) for my responsibilities: {duties}.{heard} This is a "
                        "templated position: no model was consulted."}


def template_vote(role: Role, subject: str, body: str) -> dict[str, Any]:
    found = keyword_matches(role, f"{subject}\n{body}")
    return {"vote": "approve",
            "reason": f"{FALLBACK_MARK} templated vote of the {role.title}: the proposal concerns "
                      f"this role ({', '.join(found) or 'self-selected'}); approving so the work "
                      "can proceed"}


def template_decision(subject: str, consensus: str, tally: Mapping[str, int],
                      approvers: list[Role]) -> dict[str, Any]:
    """Follow the vote; on a tie or missing votes, approve only with more yes than no."""
    approved = consensus == "approved" or (
        consensus == "escalated" and tally.get("approve", 0) > tally.get("reject", 0))
    outcome = "approved" if approved else "rejected"
    tasks = [{"role": r.name, "description": f"{subject}: {r.responsibilities[0]}"}
             for r in approvers] if approved else []
    return {"outcome": outcome, "tasks": tasks,
            "summary": f"{FALLBACK_MARK} '{subject}' is {outcome}: the vote was {consensus} "
                       f"({tally.get('approve', 0)} approve, {tally.get('reject', 0)} reject); "
                       "templated decision, no model was consulted."}
