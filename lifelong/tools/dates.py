"""The dates tool: date arithmetic on ISO dates (Python's `datetime`, proleptic Gregorian calendar).

    <call>dates: date_add(2024-03-01, 45)</call>                 ->  2024-04-15
    <call>dates: date_add(2024-03-01, -1)</call>                 ->  2024-02-29
    <call>dates: days_between(2024-03-01, 2024-04-15)</call>     ->  45

A date is YYYY-MM-DD (a real day of year 1 to 9999); a day count is a whole number, signed, of at most
MAX_DAYS days either way. `days_between(a, b)` is negative when b is before a.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

from lifelong.tools.base import Deadline, Malformed, Refused, function_call

FUNCTIONS = {"date_add": 2, "days_between": 2}  # name -> number of arguments
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # [0-9], not \d: that matches any script's digits
DAY_COUNT = re.compile(r"[+-]?[0-9]{1,7}")
MAX_DAYS = 1_000_000  # about 2,700 years: the whole calendar fits in 3.65 million days


def run(args: str, deadline: Deadline) -> str:
    """The date `date_add` reaches, or the days `days_between` counts, as text."""
    name, (first, second) = function_call(args, FUNCTIONS)
    start = parse_date(first)
    if name == "days_between":
        return str((parse_date(second) - start).days)
    return add_days(start, parse_days(second)).isoformat()


def parse_date(text: str) -> date:
    if not ISO_DATE.fullmatch(text):
        raise Malformed(f"not a date in the form YYYY-MM-DD: {text[:20]!r}")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise Refused(f"no such day: {text}") from None


def parse_days(text: str) -> int:
    if not DAY_COUNT.fullmatch(text):
        raise Malformed(f"not a whole number of days: {text[:20]!r}")
    days = int(text)
    if abs(days) > MAX_DAYS:
        raise Refused(f"{days} days is over the limit of {MAX_DAYS:,}")
    return days


def add_days(start: date, days: int) -> date:
    try:
        return start + timedelta(days=days)
    except OverflowError:
        raise Refused(f"{start} {days:+d} days is outside years 1 to 9999") from None
