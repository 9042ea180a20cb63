"""Cron schedules for pipeline cron inputs, as robfig/cron (the library
Pachyderm 1.7 used) reads them, and Go duration strings.

Accepted specs:

- ``@every <duration>`` with a Go duration (``@every 10s``, ``@every 1h30m``);
  sub-second parts are dropped and the delay is at least one second;
- ``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``,
  ``@hourly``;
- five fields ``minute hour day-of-month month day-of-week`` (robfig's
  ``ParseStandard``), or six with a leading ``second`` field;
- per field: ``*`` or ``?``, numbers, ranges ``a-b``, steps ``*/n``, ``a-b/n``
  and ``a/n`` (= ``a-max/n``), comma lists, and names for months (``JAN``)
  and weekdays (``MON``, Sunday = 0), case-insensitively.

When both day-of-month and day-of-week are restricted (neither is ``*``/``?``)
a day matches either; otherwise it must match both (robfig's and Vixie cron's
rule). Everything is computed in UTC.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from libs.errors import InvalidArgument

# ---- Go durations ----------------------------------------------------------

_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_DURATION_PART = re.compile(r"(\d*)(?:\.(\d*))?([a-zµμ]+)")


def parse_go_duration(text: str) -> int:
    """A Go ``time.ParseDuration`` string (``"90s"``, ``"1m30s"``,
    ``"1.5h"``, ``"-2ms"``, ``"0"``) in nanoseconds."""
    if not isinstance(text, str):
        raise InvalidArgument(f"invalid duration {text!r}: expected a string such as '1m30s'")
    body = text
    sign = 1
    if body and body[0] in "+-":
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        raise InvalidArgument(f"invalid duration {text!r}: expected a string such as '1m30s'")
    total = 0
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None or (not match.group(1) and not match.group(2)):
            raise InvalidArgument(f"invalid duration {text!r}: expected a string such as '1m30s'")
        whole, frac, unit = match.groups()
        if unit not in _UNIT_NS:
            raise InvalidArgument(
                f"invalid duration {text!r}: unknown unit {unit!r} (use ns, us, ms, s, m or h)"
            )
        scale = _UNIT_NS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        pos = match.end()
    return sign * total


# ---- schedules -------------------------------------------------------------


@dataclass(frozen=True)
class _Bounds:
    name: str
    low: int
    high: int
    names: dict[str, int]


_MONTH_NAMES = {
    n: i + 1
    for i, n in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_DOW_NAMES = {n: i for i, n in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}

_SECOND = _Bounds("second", 0, 59, {})
_MINUTE = _Bounds("minute", 0, 59, {})
_HOUR = _Bounds("hour", 0, 23, {})
_DOM = _Bounds("day-of-month", 1, 31, {})
_MONTH = _Bounds("month", 1, 12, _MONTH_NAMES)
_DOW = _Bounds("day-of-week", 0, 6, _DOW_NAMES)

_FIELDS_5 = (_MINUTE, _HOUR, _DOM, _MONTH, _DOW)
_FIELDS_6 = (_SECOND, _MINUTE, _HOUR, _DOM, _MONTH, _DOW)

_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
_EVERY = "@every "
# Longest gap between two matches of a valid schedule: Feb 29 can be 8
# years away (2096 -> 2104).
_SEARCH_YEARS = 9


def _bad(spec: str, bounds: _Bounds, text: str, why: str) -> InvalidArgument:
    return InvalidArgument(
        f"invalid cron spec {spec!r}: {bounds.name} field {text!r}: {why}",
        spec=spec,
        field=bounds.name,
    )


def _number(spec: str, bounds: _Bounds, field: str, text: str) -> int:
    named = bounds.names.get(text.lower())
    if named is not None:
        return named
    if not text.isdigit():
        hint = f" or a name ({', '.join(k.upper() for k in bounds.names)})" if bounds.names else ""
        raise _bad(spec, bounds, field, f"{text!r} is not a number{hint}")
    return int(text)


def _parse_range(spec: str, bounds: _Bounds, field: str, expr: str) -> tuple[set[int], bool]:
    """One comma-separated part: the values it selects, and whether it was
    ``*``/``?`` (robfig's star bit)."""
    range_text, slash, step_text = expr.partition("/")
    if "/" in step_text:
        raise _bad(spec, bounds, field, f"too many slashes in {expr!r}")
    star = range_text in ("*", "?")
    if star:
        low, high = bounds.low, bounds.high
    else:
        low_text, dash, high_text = range_text.partition("-")
        if "-" in high_text:
            raise _bad(spec, bounds, field, f"too many hyphens in {expr!r}")
        low = _number(spec, bounds, field, low_text)
        if dash:
            high = _number(spec, bounds, field, high_text)
        elif slash:
            high = bounds.high  # "a/n" means "a-max/n"
        else:
            high = low
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) == 0:
            raise _bad(spec, bounds, field, f"step {step_text!r} must be a positive number")
        step = int(step_text)
    if low < bounds.low:
        raise _bad(spec, bounds, field, f"{low} is below the minimum {bounds.low}")
    if high > bounds.high:
        raise _bad(spec, bounds, field, f"{high} is above the maximum {bounds.high}")
    if low > high:
        raise _bad(spec, bounds, field, f"range start {low} is beyond its end {high}")
    return set(range(low, high + 1, step)), star


def _parse_field(spec: str, bounds: _Bounds, field: str) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    star = False
    for expr in field.split(","):
        if not expr:
            raise _bad(spec, bounds, field, "empty list item")
        selected, is_star = _parse_range(spec, bounds, field, expr)
        values |= selected
        star = star or is_star
    return frozenset(values), star


def _max_days(month: int) -> int:
    return 29 if month == 2 else calendar.monthrange(2001, month)[1]


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron spec; ``next_after`` gives its next activation."""

    spec: str
    every_ns: int | None = None
    seconds: frozenset[int] = frozenset()
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()
    # Both day fields restricted: a day matches either (else both).
    days_either: bool = False

    @classmethod
    def parse(cls, spec: str) -> CronSchedule:
        if not isinstance(spec, str) or not spec.strip():
            raise InvalidArgument("invalid cron spec: the spec is empty", spec=spec)
        text = spec.strip()
        if text.startswith(_EVERY):
            return cls._every(spec, text[len(_EVERY) :].strip())
        if text.startswith("@"):
            expanded = _DESCRIPTORS.get(text.lower())
            if expanded is None:
                raise InvalidArgument(
                    f"invalid cron spec {spec!r}: unknown descriptor {text!r} (use @every "
                    "<duration>, @yearly, @annually, @monthly, @weekly, @daily, @midnight "
                    "or @hourly)",
                    spec=spec,
                )
            text = expanded
        fields = text.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        elif len(fields) != 6:
            raise InvalidArgument(
                f"invalid cron spec {spec!r}: expected 5 fields (minute hour day-of-month "
                "month day-of-week) or 6 (with a leading second), found "
                f"{len(fields)}",
                spec=spec,
            )
        parsed = [_parse_field(spec, b, f) for b, f in zip(_FIELDS_6, fields, strict=True)]
        (secs, _), (mins, _), (hrs, _), (dom, dom_star), (mons, _), (dow, dow_star) = parsed
        either = not dom_star and not dow_star
        if not either and not any(d <= _max_days(m) for m in mons for d in dom):
            raise InvalidArgument(
                f"invalid cron spec {spec!r}: the day-of-month never occurs in the "
                "selected months, so the schedule would never fire",
                spec=spec,
                field="day-of-month",
            )
        return cls(
            spec=spec,
            seconds=secs,
            minutes=mins,
            hours=hrs,
            days=dom,
            months=mons,
            weekdays=dow,
            days_either=either,
        )

    @classmethod
    def _every(cls, spec: str, text: str) -> CronSchedule:
        try:
            ns = parse_go_duration(text)
        except InvalidArgument as exc:
            raise InvalidArgument(f"invalid cron spec {spec!r}: {exc}", spec=spec) from None
        if ns <= 0:
            raise InvalidArgument(
                f"invalid cron spec {spec!r}: the @every interval must be positive", spec=spec
            )
        second = 1_000_000_000
        delay = max(ns - ns % second, second)
        return cls(spec=spec, every_ns=delay)

    def _day_matches(self, t: datetime) -> bool:
        dom = t.day in self.days
        dow = (t.isoweekday() % 7) in self.weekdays  # Sunday = 0
        return (dom or dow) if self.days_either else (dom and dow)

    def next_after(self, t: datetime) -> datetime:
        """The first activation strictly after ``t`` (an aware datetime),
        in UTC, on a whole second."""
        if t.tzinfo is None or t.utcoffset() is None:
            raise InvalidArgument(f"next_after needs an aware datetime, got {t!r}")
        t = t.astimezone(UTC)
        if self.every_ns is not None:
            return t.replace(microsecond=0) + timedelta(microseconds=self.every_ns // 1000)
        t = t.replace(microsecond=0) + timedelta(seconds=1)
        limit = t.year + _SEARCH_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
                t = t.replace(year=year, month=month, day=1, hour=0, minute=0, second=0)
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
            elif t.second not in self.seconds:
                t = t + timedelta(seconds=1)
            else:
                return t
        raise InvalidArgument(f"cron spec {self.spec!r} never fires after {t.isoformat()}")


__all__ = ["CronSchedule", "parse_go_duration"]
