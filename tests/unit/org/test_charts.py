"""The console's charts added up without Postgres: each role's spend per hour becomes
a running total beside its budget; tasks finished per minute land in their minute,
per outcome, oldest first."""

from __future__ import annotations

from datetime import date

import pytest

from echo.errors import UsageError
from echo.org.charts import MAX_MINUTES, finished_chart, spend_chart

DAY = date(2026, 12, 2)


def test_spend_is_a_running_total_per_role_up_to_the_hour_now() -> None:
    rows = [{"role": "cto", "hour": 1, "spent_usd": 0.25, "runs": 1},
            {"role": "cto", "hour": 3, "spent_usd": 0.5, "runs": 2},
            {"role": "ceo", "hour": 0, "spent_usd": 1.0, "runs": 1}]
    chart = spend_chart(DAY, 4, "UTC", rows, {"cto": 2.0, "chro": 1.5, "pm": None})
    lines = {r.role: r for r in chart.roles}
    assert [r.role for r in chart.roles] == ["ceo", "chro", "cto"]  # spend or a budget
    assert lines["cto"].hourly == [0.0, 0.25, 0.25, 0.75, 0.75]
    assert (lines["cto"].spent_usd, lines["cto"].runs, lines["cto"].budget_usd) == (0.75, 3, 2.0)
    assert lines["ceo"].hourly == [1.0] * 5 and lines["ceo"].budget_usd is None
    assert lines["chro"].hourly == [0.0] * 5 and lines["chro"].spent_usd == 0.0
    assert (chart.day, chart.hour, chart.timezone) == (DAY, 4, "UTC")


def test_spend_of_no_role_late_rows_and_one_role_only() -> None:
    rows = [{"role": "", "hour": 0, "spent_usd": 0.1, "runs": 1},
            {"role": "cto", "hour": 9, "spent_usd": 0.2, "runs": 1}]  # after "now": this hour
    chart = spend_chart(DAY, 2, "UTC", rows, {})
    lines = {r.role: r for r in chart.roles}
    assert lines["(none)"].hourly == [0.1, 0.1, 0.1]
    assert lines["cto"].hourly == [0.0, 0.0, 0.2]
    only = spend_chart(DAY, 2, "UTC", rows, {"cto": 1.0, "ceo": 3.0}, only="ceo")
    assert [(r.role, r.hourly, r.budget_usd) for r in only.roles] == [("ceo", [0.0] * 3, 3.0)]
    assert len(spend_chart(DAY, 23, "UTC", [], {"cto": 1.0}).roles[0].hourly) == 24


def test_finished_tasks_land_in_their_minute_per_outcome_oldest_first() -> None:
    rows = [{"ago": 0, "outcome": "completed", "n": 3}, {"ago": 0, "outcome": "failed", "n": 1},
            {"ago": 4, "outcome": "skipped", "n": 2}, {"ago": 5, "outcome": "completed", "n": 9}]
    chart = finished_chart(rows, 5)  # the row 5 minutes ago is outside a 5-minute window
    assert chart.counts == [{"skipped": 2}, {}, {}, {}, {"completed": 3, "failed": 1}]
    assert chart.total == {"completed": 3, "failed": 1, "skipped": 2}
    assert chart.outcomes == ["completed", "failed", "skipped"]  # the order of OUTCOMES
    assert finished_chart([], 60).counts == [{}] * 60


@pytest.mark.parametrize("minutes", [0, -1, MAX_MINUTES + 1])
def test_a_window_out_of_range_is_refused(minutes: int) -> None:
    with pytest.raises(UsageError, match="minutes must be between 1 and 1440"):
        finished_chart([], minutes)
