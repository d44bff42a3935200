"""The workflow's pure parts: the quorum rule, reading a model's JSON answer, the
keyword and template fallbacks, and the training scenarios against the real roles."""

from __future__ import annotations

import pytest

from echo.org.agent import answers, deciders
from echo.org.roles import load_roles
from echo.org.workflow import consensus, post_uuid
from echo.org.workflow.training import Scenario
from echo.paths import project_path

ROLES = load_roles(project_path("agents"))


def test_consensus_rules() -> None:
    three = ["a", "b", "c"]
    assert consensus({"a": "approve", "b": "approve"}, three, "majority") == "approved"
    assert consensus({"a": "reject", "b": "reject", "c": "approve"}, three, "majority") == "rejected"
    assert consensus({"a": "approve", "b": "reject"}, three, "majority") == "escalated"
    assert consensus({"a": "approve", "b": "approve"}, three, "unanimous") == "escalated"
    assert consensus(dict.fromkeys(three, "approve"), three, "unanimous") == "approved"
    assert consensus({}, [], "majority") == "escalated"


def test_post_uuids_are_stable_per_step() -> None:
    assert post_uuid("wf-1", "cto", "position", 1) == post_uuid("wf-1", "cto", "position", 1)
    assert post_uuid("wf-1", "cto", "position", 1) != post_uuid("wf-1", "cto", "position", 2)


def test_json_answers_are_read_and_checked() -> None:
    assert answers.parse_json_object('Sure: ```json\n{"position": "go"}\n```') == {"position": "go"}
    with pytest.raises(ValueError):
        answers.parse_json_object("no json at all")
    got = answers.check_select({"participate": True, "confidence": 7, "reason": " mine\x00 "})
    assert got == {"participate": True, "confidence": 1.0, "reason": "mine"}
    for bad in ({"participate": "yes", "reason": "x"}, {"participate": True, "reason": ""},
                {"participate": True, "confidence": "high", "reason": "x"}):
        with pytest.raises(ValueError):
            answers.check_select(bad)
    with pytest.raises(ValueError):
        answers.check_vote({"vote": "maybe", "reason": "x"})
    decided = answers.check_decision(
        {"outcome": "approved", "summary": "go", "tasks": [
            {"role": "cto", "description": "plan"}, {"role": "ghost", "description": "x"},
            {"role": "ceo", "description": " "}]}, ["ceo", "cto"])
    assert decided["tasks"] == [{"role": "cto", "description": "plan"}]
    rejected = answers.check_decision(
        {"outcome": "rejected", "summary": "no", "tasks": [{"role": "cto", "description": "x"}]}, ["cto"])
    assert rejected["tasks"] == []


def test_keyword_fallback_and_templates_say_what_they_are() -> None:
    cto = ROLES["cto"]
    joined = answers.keyword_select(cto, "Move the API", "to the cloud")
    assert joined["participate"] and "api" in joined["reason"] and "cloud" in joined["reason"]
    assert not answers.keyword_select(cto, "Rapid growth", "")["participate"]
    assert answers.keyword_matches(cto, "capital") == []  # whole words only
    position = answers.template_position(cto, "Plan", 2, ["ceo"])["position"]
    assert position.startswith(answers.FALLBACK_MARK) and "ceo" in position
    assert answers.template_vote(cto, "Move the API", "")["reason"].startswith(answers.FALLBACK_MARK)
    tie = answers.template_decision("Plan", "escalated", {"approve": 1, "reject": 1}, [cto])
    assert tie["outcome"] == "rejected" and tie["tasks"] == []
    yes = answers.template_decision("Plan", "approved", {"approve": 2}, [cto])
    assert yes["outcome"] == "approved" and [t["role"] for t in yes["tasks"]] == ["cto"]


async def test_no_decider_means_the_fallback_with_its_reason() -> None:
    got = await deciders.answer(None, "prompt", 1.0, answers.check_position, lambda: {"position": "t"})
    assert got.source == "fallback" and got.decider == "keyword" and got.fallback_reason


def test_prompts_render_and_carry_their_step_marker() -> None:
    for step in ("select", "position", "vote", "decide"):
        rendered = answers.render(step, title="CTO", subject="S", body="B", responsibilities="- r",
                                   round=1, rounds=2, thread="-", consensus="approved", tally="1",
                                   roles="cto")
        assert rendered.startswith(f"[echo:{step}]") and "$" not in rendered


@pytest.mark.parametrize("name", sorted(p.stem for p in project_path("training").glob("*.toml")))
def test_training_scenarios_hold_under_the_keyword_fallback(name: str) -> None:
    _, spec = Scenario.load(name)
    joined = {r for r, role in ROLES.items()
              if answers.keyword_select(role, spec.subject, spec.body)["participate"]}
    assert set(spec.expect.participants) <= joined
    assert not set(spec.expect.absent) & joined
