"""Reporting periods, in the workspace's time zone. Pure.

    today | yesterday | month | last-month | YYYY-MM | YYYY-MM-DD | YYYY-MM-DD..YYYY-MM-DD (inclusive)

A period is a [start, end) span of local time plus the rollup keys that cover it exactly: a whole
month is one `M#` key, anything else the `D#` key of each day (ranges at most MAX_DAYS days).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC as _UTC
from datetime import date, datetime, timedelta, tzinfo

MAX_DAYS = 366
NAMES = "today, yesterday, month, last-month, YYYY-MM, YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD"


class PeriodError(ValueError):
    pass


@dataclass(frozen=True)
class Period:
    label: str
    start: datetime  # inclusive, local time (aware)
    end: datetime  # exclusive
    rollup_keys: tuple[str, ...]

    def contains_ms(self, ts_ms: int) -> bool:
        return self.start.timestamp() * 1000 <= ts_ms < self.end.timestamp() * 1000

    def utc_days(self) -> list[str]:
        """The UTC days (ledger partitions) this period touches."""
        first = self.start.astimezone(_UTC).date()
        last = (self.end - timedelta(microseconds=1)).astimezone(_UTC).date()
        return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _midnight(day: date, tz: tzinfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def _days(first: date, last: date, tz: tzinfo, label: str) -> Period:
    count = (last - first).days + 1
    if count < 1:
        raise PeriodError(f"the range {label} ends before it starts")
    if count > MAX_DAYS:
        raise PeriodError(f"the range {label} spans {count} days; at most {MAX_DAYS}")
    keys = tuple(f"D#{first + timedelta(days=i):%Y-%m-%d}" for i in range(count))
    return Period(label, _midnight(first, tz), _midnight(last + timedelta(days=1), tz), keys)


def _month(first: date, tz: tzinfo) -> Period:
    return Period(f"{first:%Y-%m}", _midnight(first, tz), _midnight(_next_month(first), tz), (f"M#{first:%Y-%m}",))


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise PeriodError(f"{text!r} is not a date (YYYY-MM-DD)") from exc


def parse(text: str, now: datetime) -> Period:
    """`now` is aware, in the workspace's time zone."""
    try:
        return _parse(text, now)
    except OverflowError as exc:  # a date next to year 1 or 9999: no period reaches past them
        raise PeriodError(f"{text!r} is out of range") from exc


def _parse(text: str, now: datetime) -> Period:
    tz = now.tzinfo
    assert tz is not None
    today = now.date()
    value = text.strip().lower()
    if value == "today":
        return _days(today, today, tz, f"{today}")
    if value == "yesterday":
        day = today - timedelta(days=1)
        return _days(day, day, tz, f"{day}")
    if value == "month":
        return _month(_month_start(today), tz)
    if value == "last-month":
        return _month(_month_start(_month_start(today) - timedelta(days=1)), tz)
    if re.fullmatch(r"\d{4}-\d{2}", value):
        try:
            return _month(date.fromisoformat(value + "-01"), tz)
        except ValueError as exc:
            raise PeriodError(f"{text!r} is not a month (YYYY-MM)") from exc
    if ".." in value:
        first, _, last = value.partition("..")
        return _days(_date(first), _date(last), tz, f"{first}..{last}")
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        day = _date(value)
        return _days(day, day, tz, value)
    raise PeriodError(f"unknown period {text!r}; use {NAMES}")
