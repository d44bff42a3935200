"""Reading a usage limit's reset (issue 18, item 1): the CLI names the NEXT such moment.

Every case sets the clock (`now`); none compares a date with the wall clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from echo.work.limits import UNREADABLE_WAIT, usage_limit_reset

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
ZONES = ("UTC", "Europe/London", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe",
         "Pacific/Kiritimati")


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_a_date_already_past_this_year_is_next_years() -> None:
    now = at(2026, 12, 31, 23, 30)
    assert usage_limit_reset("You've hit your weekly limit · resets Jan 1, 1am (UTC)", now) == \
        at(2027, 1, 1, 1, 1)
    # the issue's own case, read on any day after Nov 27: next year's Nov 27
    assert usage_limit_reset("resets Nov 27, 11am (UTC)", at(2026, 12, 2, 3, 0)) == \
        at(2027, 11, 27, 11, 1)
    # and before it: this year's
    assert usage_limit_reset("resets Nov 27, 11am (UTC)", at(2026, 11, 24, 3, 0)) == \
        at(2026, 11, 27, 11, 1)


def test_a_time_already_past_today_is_tomorrows() -> None:
    now = at(2026, 3, 14, 23, 50)
    assert usage_limit_reset("You've hit your session limit · resets 12:10am (UTC)", now) == \
        at(2026, 3, 15, 0, 11)
    # across the year too
    assert usage_limit_reset("resets 12:10am (UTC)", at(2026, 12, 31, 23, 50)) == \
        at(2027, 1, 1, 0, 11)


def test_minute_precision_and_the_current_minute() -> None:
    # The CLI rounds down to the minute: at 02:19:10 "2:19am" is this minute, not tomorrow.
    now = at(2026, 11, 26, 2, 19, 10)
    assert usage_limit_reset("You've hit your session limit · resets 2:19am (UTC)", now) == \
        at(2026, 11, 26, 2, 20)
    assert usage_limit_reset("resets 2:18am (UTC)", now) == at(2026, 11, 27, 2, 19)


def test_a_zone_reads_in_its_own_wall_clock() -> None:
    # 23:00 UTC on Dec 31 is already Jan 1 in Kolkata (+05:30)
    now = at(2026, 12, 31, 23, 0)
    assert usage_limit_reset("resets Jan 3, 9:30am (Asia/Kolkata)", now) == at(2027, 1, 3, 4, 1)
    assert usage_limit_reset("resets 4:00am (Asia/Kolkata)", now) == at(2026, 12, 31, 22, 31) + \
        timedelta(days=1)
    # no zone shown: the given local zone
    assert usage_limit_reset("resets 1am", now, local_zone=ZoneInfo("Europe/Paris")) == \
        at(2027, 1, 1, 0, 1)


def test_a_year_shown_is_kept_and_a_reset_the_cli_cannot_show_waits_an_hour() -> None:
    now = at(2026, 12, 30, 12, 0)
    assert usage_limit_reset("resets Jan 2, 2027, 3pm (UTC)", now) == at(2027, 1, 2, 15, 1)
    for text in ("no time here", "resets Feb 30, 3pm (UTC)", "resets 13pm (UTC)",
                 "resets Jan 2, 2020, 3pm (UTC)", "resets Jan 2, 2031, 3pm (UTC)",
                 "resets 25:00 (UTC)", "resets Foo 3, 1am (UTC)"):
        assert usage_limit_reset(text, now) == now + UNREADABLE_WAIT, text
    # Feb 29 is next in 2028: more than a year from Dec 2026, so not a reset the CLI shows
    assert usage_limit_reset("resets Feb 29, 1am (UTC)", now) == now + UNREADABLE_WAIT
    assert usage_limit_reset("resets Feb 29, 1am (UTC)", at(2027, 3, 1, 0, 0)) == \
        at(2028, 2, 29, 1, 1)


def _shown(hour: int, minute: int) -> str:
    clock = f"{hour % 12 or 12}" + (f":{minute:02d}" if minute else "")
    return clock + ("am" if hour < 12 else "pm")


moments = st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2090, 12, 31),
                       timezones=st.just(UTC))


@settings(max_examples=400, deadline=None)
@given(now=moments, month=st.integers(0, 12), day=st.integers(1, 31), hour=st.integers(0, 23),
       minute=st.integers(0, 59), zone=st.sampled_from(ZONES))
def test_any_shown_reset_lies_after_now_and_within_a_year(
        now: datetime, month: int, day: int, hour: int, minute: int, zone: str) -> None:
    date = f"{MONTHS[month - 1]} {day}, " if month else ""
    reset = usage_limit_reset(f"You've hit your limit · resets {date}{_shown(hour, minute)} "
                              f"({zone})", now)
    assert reset > now
    # a time alone is within a day (plus a daylight-saving shift), a date within a year
    assert reset <= now + (timedelta(days=1, hours=1) if not month else timedelta(days=366))


@settings(max_examples=400, deadline=None)
@given(now=moments, ahead=st.timedeltas(min_value=timedelta(seconds=1),
                                       max_value=timedelta(days=300)), zone=st.sampled_from(ZONES))
def test_what_the_cli_shows_for_a_reset_reads_back_as_that_reset(
        now: datetime, ahead: timedelta, zone: str) -> None:
    # Render a real future reset as the CLI does (rounded down to the minute, the date
    # when more than 24 h away, the year when it differs), then read it back.
    real = now + ahead
    local, local_now = real.astimezone(ZoneInfo(zone)), now.astimezone(ZoneInfo(zone))
    # an hour a daylight-saving change shows twice is ambiguous on any clock: skip it
    assume(local.replace(fold=1 - local.fold).astimezone(UTC) == real.astimezone(UTC))
    text = _shown(local.hour, local.minute)
    if ahead > timedelta(hours=24):
        year = f" {local.year}," if local.year != local_now.year else ""
        text = f"{MONTHS[local.month - 1]} {local.day},{year} {text}"
    reset = usage_limit_reset(f"You've hit your weekly limit · resets {text} ({zone})", now)
    assert real <= reset <= real + timedelta(minutes=1), text
