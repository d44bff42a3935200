"""Training scenarios: a workflow put to the running organisation, and what must happen.

A scenario is a TOML file under training/ (described in training/README.md): the
proposal (subject, body, rounds, quorum, timeouts) and `[expect]`ations about the
finished workflow (who takes part, who stays out, the outcome, who gets work).
`Scenario.load` checks the file key by key (a typo is a `ConfigError` naming the
key); `Scenario.check` turns a finished workflow into one `Check` per expectation,
which `echoctl train` prints as ✓/✗ lines.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from echo.errors import ConfigError, UsageError, one_line
from echo.org.workflow.store import Delivery, Phase, WorkflowDetail
from echo.paths import project_path


class Check(BaseModel):
    """One expectation and whether it held."""

    ok: bool
    check: str


class Expectations(BaseModel):
    model_config = ConfigDict(extra="forbid")

    participants: list[str] = Field(default_factory=list)
    absent: list[str] = Field(default_factory=list)
    outcome: str | None = None
    tasks_for: list[str] = Field(default_factory=list)


class Scenario(BaseModel):
    """One training scenario (training/NAME.toml)."""

    model_config = ConfigDict(extra="forbid")

    subject: str
    body: str = ""
    stable_seconds: float = Field(0.0, ge=0)
    rounds: int = Field(2, ge=1, le=10)
    quorum: str = "majority"
    decider_timeout: float = Field(30.0, gt=0)
    phase_timeout: float = Field(120.0, gt=0)
    timeout: float = Field(600.0, gt=0)
    expect: Expectations = Field(default_factory=Expectations)

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a scenario needs a subject")
        return value

    @classmethod
    def load(cls, name: str) -> tuple[Path, Scenario]:
        """training/NAME.toml (or a path to a .toml file), checked key by key."""
        folder = project_path("training")
        path = Path(name) if name.endswith(".toml") else folder / f"{name}.toml"
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            known = sorted(p.stem for p in folder.glob("*.toml"))
            raise UsageError(f"no scenario {path}; known: {', '.join(known) or 'none'}") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the scenario ({exc})") from None
        if "subject" not in data:
            raise ConfigError(f"{path}: a scenario needs a subject")
        try:
            return path, cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = one_line(".".join(str(p) for p in first["loc"]))
            if first["type"] == "extra_forbidden":
                raise ConfigError(f"{path}: unknown key {where}; see training/README.md") from None
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise ConfigError(f"{path}: {where}: {msg}") from None

    def check(self, detail: WorkflowDetail) -> list[Check]:
        """One check per expectation, about a finished workflow."""
        joined = {p.role for p in detail.participants if p.participate}
        decision = detail.decision
        assigned = {t.get("role") for t in decision.tasks} if decision else set()
        checks = [Check(ok=detail.workflow.phase == Phase.DONE, check="the workflow completed")]
        checks += [Check(ok=r in joined, check=f"{r} took part") for r in self.expect.participants]
        checks += [Check(ok=r not in joined, check=f"{r} stayed out") for r in self.expect.absent]
        if self.expect.outcome is not None:
            got = decision.outcome if decision else None
            checks.append(Check(ok=got == self.expect.outcome,
                                check=f"the decision is {self.expect.outcome} (got {got or 'none'})"))
        checks += [Check(ok=r in assigned, check=f"work assigned to {r}") for r in self.expect.tasks_for]
        return checks


def delivery_checks(delivery: Delivery, roles: list[str]) -> list[Check]:
    """The proposal was stored, announced (Redis or NOTIFY) and processed by every agent."""
    return [
        Check(ok=delivery.message_id is not None and delivery.announced,
              check="the proposal was stored in Postgres and announced"),
        Check(ok=set(roles) <= set(delivery.reached),
              check=f"the proposal reached all {len(roles)} agents"),
    ]
