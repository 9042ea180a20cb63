"""Cron schedules as robfig/cron (Pachyderm 1.7) reads them, and Go
durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from libs.errors import InvalidArgument
from libs.pps.cron import CronSchedule, parse_go_duration


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def fires(spec: str, start: datetime, n: int) -> list[datetime]:
    schedule = CronSchedule.parse(spec)
    out = []
    for _ in range(n):
        start = schedule.next_after(start)
        out.append(start)
    return out


# --- Go durations -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("10s", 10 * 10**9),
        ("1m30s", 90 * 10**9),
        ("1h30m", 5400 * 10**9),
        ("1.5h", 5400 * 10**9),
        ("300ms", 300 * 10**6),
        ("2us", 2000),
        ("2µs", 2000),
        ("7ns", 7),
        ("-1m", -60 * 10**9),
        ("+5s", 5 * 10**9),
        (".5s", 5 * 10**8),
    ],
)
def test_go_durations(text: str, ns: int) -> None:
    assert parse_go_duration(text) == ns


@pytest.mark.parametrize("text", ["", "10", "1x", "s", "1m30", "-", "1.s2", "ten seconds"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid duration"):
        parse_go_duration(text)


# --- @every and descriptors ---------------------------------------------------


def test_every_adds_the_interval_on_whole_seconds() -> None:
    start = datetime(2024, 1, 1, 0, 0, 0, 700_000, tzinfo=UTC)
    assert fires("@every 10s", start, 3) == [at(2024, 1, 1, 0, 0, 10), at(2024, 1, 1, 0, 0, 20),
                                            at(2024, 1, 1, 0, 0, 30)]  # fmt: skip
    assert fires("@every 1h30m", at(2024, 1, 1), 1) == [at(2024, 1, 1, 1, 30)]


def test_every_below_a_second_is_a_second_and_fractions_are_dropped() -> None:
    assert fires("@every 200ms", at(2024, 1, 1), 1) == [at(2024, 1, 1, 0, 0, 1)]
    assert fires("@every 2.7s", at(2024, 1, 1), 1) == [at(2024, 1, 1, 0, 0, 2)]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("@yearly", at(2025, 1, 1)),
        ("@annually", at(2025, 1, 1)),
        ("@monthly", at(2024, 4, 1)),
        ("@weekly", at(2024, 3, 17)),  # the next Sunday
        ("@daily", at(2024, 3, 16)),
        ("@midnight", at(2024, 3, 16)),
        ("@hourly", at(2024, 3, 15, 13)),
    ],
)
def test_descriptors(spec: str, expected: datetime) -> None:
    assert CronSchedule.parse(spec).next_after(at(2024, 3, 15, 12, 30)) == expected


# --- fields -----------------------------------------------------------------


def test_five_fields_start_with_minutes() -> None:
    assert fires("*/15 * * * *", at(2024, 1, 1, 10, 7, 30), 3) == [
        at(2024, 1, 1, 10, 15),
        at(2024, 1, 1, 10, 30),
        at(2024, 1, 1, 10, 45),
    ]


def test_six_fields_start_with_seconds() -> None:
    assert fires("*/20 * * * * *", at(2024, 1, 1, 10, 0, 5), 3) == [
        at(2024, 1, 1, 10, 0, 20),
        at(2024, 1, 1, 10, 0, 40),
        at(2024, 1, 1, 10, 1, 0),
    ]


def test_next_is_strictly_after() -> None:
    assert fires("0 12 * * *", at(2024, 1, 1, 12), 1) == [at(2024, 1, 2, 12)]


def test_ranges_lists_steps_and_names() -> None:
    # weekdays 9-17 every 30 minutes; Friday evening jumps to Monday
    assert fires("0,30 9-17 * * MON-FRI", at(2024, 1, 5, 17, 15), 2) == [
        at(2024, 1, 5, 17, 30),
        at(2024, 1, 8, 9, 0),
    ]
    assert fires("0 0 1 jan,Jul *", at(2024, 2, 1), 2) == [at(2024, 7, 1), at(2025, 1, 1)]
    assert fires("5/20 * * * *", at(2024, 1, 1, 0, 0), 3) == [
        at(2024, 1, 1, 0, 5),
        at(2024, 1, 1, 0, 25),
        at(2024, 1, 1, 0, 45),
    ]
    assert fires("0 0 * * 1-5/2", at(2024, 1, 1), 3) == [  # Mon, Wed, Fri
        at(2024, 1, 3),
        at(2024, 1, 5),
        at(2024, 1, 8),
    ]


def test_question_mark_is_a_star() -> None:
    assert CronSchedule.parse("0 0 1 * ?").next_after(at(2024, 1, 15)) == at(2024, 2, 1)


def test_both_day_fields_restricted_match_either() -> None:
    # the 13th or any Friday (2024-09-06 is a Friday, 2024-09-13 a Friday too)
    assert fires("0 0 13 * FRI", at(2024, 9, 1), 3) == [
        at(2024, 9, 6),
        at(2024, 9, 13),
        at(2024, 9, 20),
    ]
    # day-of-month restricted, day-of-week '*': both must match (only the 13th)
    assert fires("0 0 13 * *", at(2024, 9, 1), 2) == [at(2024, 9, 13), at(2024, 10, 13)]


def test_february_29th_and_month_ends() -> None:
    assert CronSchedule.parse("0 0 29 2 *").next_after(at(2024, 3, 1)) == at(2028, 2, 29)
    assert fires("0 0 31 * *", at(2024, 4, 1), 2) == [at(2024, 5, 31), at(2024, 7, 31)]


def test_year_end_rollover() -> None:
    assert CronSchedule.parse("59 23 31 12 *").next_after(at(2024, 12, 31, 23, 59)) == at(
        2025, 12, 31, 23, 59
    )


def test_other_time_zones_are_converted_to_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    got = CronSchedule.parse("0 * * * *").next_after(datetime(2024, 1, 1, 12, 30, tzinfo=plus2))
    assert got == at(2024, 1, 1, 11) and got.tzinfo == UTC


def test_naive_times_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="aware"):
        CronSchedule.parse("@hourly").next_after(datetime(2024, 1, 1))


# --- bad specs --------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("* * * *", "expected 5 fields .* found 4"),
        ("* * * * * * *", "found 7"),
        ("60 * * * *", "minute field '60': 60 is above the maximum 59"),
        ("* 24 * * *", "hour field '24'"),
        ("* * 0 * *", "day-of-month field '0': 0 is below the minimum 1"),
        ("* * * 13 *", "month field '13'"),
        ("* * * * 7", "day-of-week field '7'"),
        ("* * * FOO *", "month field 'FOO': 'FOO' is not a number or a name"),
        ("* * * * MON-FOO", "day-of-week field"),
        ("*/0 * * * *", "step '0' must be a positive number"),
        ("*/x * * * *", "step 'x'"),
        ("5-1 * * * *", "range start 5 is beyond its end 1"),
        ("1-2-3 * * * *", "too many hyphens"),
        ("*/2/3 * * * *", "too many slashes"),
        ("1,,2 * * * *", "empty list item"),
        ("-1 * * * *", "minute field"),
        ("0 0 30 2 *", "never fire"),
        ("@fortnightly", "unknown descriptor '@fortnightly'"),
        ("@every", "unknown descriptor"),
        ("@every 10", "invalid duration '10'"),
        ("@every -5s", "must be positive"),
        ("@every 0s", "must be positive"),
    ],
)
def test_bad_specs_name_the_spec_and_the_field(spec: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as info:
        CronSchedule.parse(spec)
    if spec.strip():
        assert repr(spec) in str(info.value)
