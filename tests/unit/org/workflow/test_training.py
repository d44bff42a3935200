"""Training scenarios: loaded key by key, and checked against a finished workflow."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from echo.errors import ConfigError, UsageError
from echo.org.workflow import Decision, Participant, Phase, Workflow, WorkflowDetail
from echo.org.workflow.training import Scenario

NOW = datetime.now(UTC)


def finished(phase: Phase = Phase.DONE) -> WorkflowDetail:
    wf = Workflow(id="wf-1", subject="s", started_by="operator", phase=phase, roles=["cto", "chro"],
                  phase_deadline=NOW, created_at=NOW, updated_at=NOW)
    cto = Participant(workflow_id="wf-1", role="cto", participate=True, confidence=0.9, reason="api",
                      decider="keyword", decided_at=NOW)
    decision = Decision(id=1, workflow_id="wf-1", decided_by="ceo", outcome="approved",
                        consensus="approved", summary="go", tasks=[{"role": "cto"}], source="fallback",
                        created_at=NOW)
    return WorkflowDetail(workflow=wf, participants=[cto], messages=[], decision=decision, tasks=[],
                          timeline=[])


def test_scenario_files_are_checked_key_by_key(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no scenario"):
        Scenario.load("no_such_scenario")
    bad = tmp_path / "bad.toml"
    bad.write_text('subject = "x"\n[expect]\nwinner = "cto"\n')
    with pytest.raises(ConfigError, match=r"unknown key expect\.winner"):
        Scenario.load(str(bad))
    bad.write_text('body = "no subject"\n')
    with pytest.raises(ConfigError, match="needs a subject"):
        Scenario.load(str(bad))
    bad.write_text('subject = "x"\nrounds = 0\n')
    with pytest.raises(ConfigError, match="rounds"):
        Scenario.load(str(bad))


def test_checks_one_line_per_expectation() -> None:
    spec = Scenario.model_validate({"subject": "x", "expect": {
        "participants": ["cto"], "absent": ["chro"], "outcome": "rejected", "tasks_for": ["cto"]}})
    checks = spec.check(finished())
    assert [c.ok for c in checks] == [True, True, True, False, True]
    assert checks[3].check == "the decision is rejected (got approved)"
    assert not spec.check(finished(Phase.CANCELLED))[0].ok
