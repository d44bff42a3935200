"""The spend and quota governor: every Claude run on a ledger, budgets that hold
across workers and machines, plan windows that pause a whole account, and a
burn-rate breaker. Postgres holds all of it (shared/sql/010_governor.sql); the
claim statement consults it, so no worker can start a run the governor refuses.

    governor = Governor(settings.governor, database)
    await governor.sync({"cto": 5.0})              # configured defaults, at start
    await governor.set_budget("role", "cto", 8.0, known_roles=["cto"])
    report = await spend_report(governor)          # what `echoctl spend` prints
"""

from echo.work.governor.budgets import Governor, check_amount
from echo.work.governor.gate import GOVERNED, ClaimGate, GateView, Pause, Spent
from echo.work.governor.ledger import RunRecord, ledger_rows, outcome_of
from echo.work.governor.report import SpendReport, spend_report

__all__ = [
    "GOVERNED",
    "ClaimGate",
    "GateView",
    "Governor",
    "Pause",
    "RunRecord",
    "SpendReport",
    "Spent",
    "check_amount",
    "ledger_rows",
    "outcome_of",
    "spend_report",
]
