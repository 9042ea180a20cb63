"""Human ages and sizes as Pachyderm 1.7 prints them (Docker go-units)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from programs.pachctl import pretty


def test_sizes() -> None:
    assert pretty.size(0) == "0B"
    assert pretty.size(1023) == "1023B"
    assert pretty.size(1024) == "1KiB"
    assert pretty.size(1536) == "1.5KiB"
    assert pretty.size(10 * 1024**2 + 1) == "10MiB"
    assert pretty.size(1234567890) == "1.15GiB"
    assert pretty.size(5 * 1024**4) == "5TiB"


def test_durations() -> None:
    cases = {
        0.4: "Less than a second",
        1: "1 second",
        59: "59 seconds",
        60: "About a minute",
        119: "About a minute",
        120: "2 minutes",
        3599: "59 minutes",
        3600: "About an hour",
        2 * 3600: "2 hours",
        47 * 3600: "47 hours",
        48 * 3600: "2 days",
        15 * 86400: "2 weeks",
        61 * 86400: "2 months",
        800 * 86400: "2 years",
    }
    for seconds, text in cases.items():
        assert pretty.human_duration(seconds) == text, seconds


def test_ago() -> None:
    ts = Timestamp(seconds=1_000_000)
    assert pretty.ago(ts, now=1_000_030) == "30 seconds ago"
    assert pretty.ago(Timestamp(), now=5) == ""
