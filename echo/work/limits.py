"""When a plan's usage limit lifts, read from what the Claude CLI prints.

The CLI (2.1.197) ends a subscriber's refused run with "You've hit your session limit
· resets 2:19am (UTC)". It shows the time alone, to the minute and rounded down, when
the reset is within 24 hours, and the date too when it is later ("resets Nov 27, 11am
(UTC)", with ", 2027" only when the year differs). Either way the text names the NEXT
such moment, never a past one: a time already past today is tomorrow's, a date already
past this year is next year's. Reading it against a calendar instead (this year, today)
makes a reset shown in late December lie in the past and retries at once.

The clock is a parameter (`now`), so the rule is tested on any day of any year. A text
that names no reset the CLI could show (no time, Feb 30, a moment outside the coming
year) waits an hour, the same as an unreadable one.

The text is the fallback: in stream-json the CLI first streams a `rate_limit_event`
whose `resetsAt` is the 429's `anthropic-ratelimit-unified-reset`, to the second
(`announced_reset`), so a run need not wait out the rest of the shown minute.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["UNREADABLE_WAIT", "announced_reset", "usage_limit_reset"]

#: How long to wait when the text names no reset the CLI could have shown.
UNREADABLE_WAIT = timedelta(hours=1)
#: The CLI rounds the reset down to the minute: wait until the shown minute is over.
_ROUNDING = timedelta(minutes=1)

_RESET_RE = re.compile(
    r"resets\s+(?:at\s+)?(?:([a-z]{3})[a-z]*\.?\s+(\d{1,2}),?\s+(?:(\d{4}),?\s+)?)?"
    r"(\d{1,2})(?::(\d{2}))?\s*([ap]m)?(?:\s*\(([^)]+)\))?", re.IGNORECASE)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def announced_reset(resets_at: datetime | None, now: datetime | None = None) -> datetime | None:
    """The streamed reset when it is one to wait for: after `now` (the wall clock by
    default) and within the coming year; else None, and the text decides. A reset already
    past means the clocks disagree: the shown minute, read as the next such, is safer."""
    if resets_at is None:
        return None
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return resets_at if now < resets_at <= now + timedelta(days=366) else None


def usage_limit_reset(message: str, now: datetime | None = None,
                      local_zone: tzinfo | None = None) -> datetime:
    """When "You've hit your limit · resets 3pm (Europe/London)" lifts, as an aware UTC
    datetime a minute past the shown reset; `UNREADABLE_WAIT` from `now` when the text
    names no reset the CLI could show. Always after `now`, and within a year of it
    (within a day, plus a daylight-saving hour, for a time shown alone).

    `now` defaults to the wall clock; `local_zone` (for a reset shown without a zone)
    to this machine's zone."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    fallback = now + UNREADABLE_WAIT
    match = _RESET_RE.search(message)
    if not match:
        return fallback
    month_name, day, year = match[1], match[2], match[3]
    hour, minute = int(match[4]), int(match[5] or 0)
    if match[6]:
        if not 1 <= hour <= 12:
            return fallback
        hour = hour % 12 + (12 if match[6].lower() == "pm" else 0)
    if hour > 23 or minute > 59:
        return fallback
    zone = _zone(match[7], local_zone)
    local_now = now.astimezone(zone)
    if month_name:
        if month_name.lower() not in _MONTHS:
            return fallback
        month = _MONTHS.index(month_name.lower()) + 1
        years = [int(year)] if year else [local_now.year, local_now.year + 1]
        candidates = [_local(zone, y, month, int(day), hour, minute) for y in years]
    else:
        today = local_now.date()
        candidates = [_local(zone, d.year, d.month, d.day, hour, minute)
                      for d in (today, today + timedelta(days=1))]
    for shown in candidates:
        if shown is None:
            continue
        lifts = shown + _ROUNDING
        if now < lifts <= now + timedelta(days=366):
            return lifts
    return fallback


def _zone(name: str | None, local_zone: tzinfo | None) -> tzinfo:
    if name:
        try:
            return ZoneInfo(name.strip())
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return local_zone or datetime.now().astimezone().tzinfo or UTC


def _local(zone: tzinfo, year: int, month: int, day: int, hour: int,
           minute: int) -> datetime | None:
    """That wall-clock moment in `zone`, in UTC; None for a date the calendar lacks."""
    try:
        return datetime(year, month, day, hour, minute, tzinfo=zone).astimezone(UTC)
    except ValueError:
        return None
