"""pachctl: Go-tabwriter table layout, --client-only, --raw, and a clear
one-line failure when pachd is down (a real socket to a closed port)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pytest

from libs.errors import InvalidArgument
from programs.cluster.natsserver import free_port
from programs.pachctl.address import parse_address
from programs.pachctl.cli import run
from programs.pachctl.commands.version import table
from programs.pachctl.tabwriter import format_table


def test_version_table_matches_go_tabwriter() -> None:
    out = table([("pachctl", "1.7.0"), ("pachd", "1.7.0")])
    # Go's tabwriter(minwidth=20, padding=3) pads every tab-terminated cell.
    assert out.split("\n") == [
        "COMPONENT           VERSION             ",
        "pachctl             1.7.0               ",
        "pachd               1.7.0               ",
        "",
    ]


def test_tabwriter_widens_columns_and_ends_blocks_at_tabless_lines() -> None:
    text = "a\tb\t\nverylongcomponentname\tx\t\nno tabs here\nc\td\t\n"
    lines = format_table(text).split("\n")
    assert lines[0] == "a" + " " * 23 + "b" + " " * 19
    assert lines[1] == "verylongcomponentname   x                   "
    assert lines[2] == "no tabs here"
    assert lines[3] == "c" + " " * 19 + "d" + " " * 19  # a new block: back to minwidth


def test_client_only_prints_only_pachctl_row() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run(["version", "--client-only"], out, err) == 0
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    assert lines == ["COMPONENT           VERSION", "pachctl             1.7.0"]
    assert err.getvalue() == ""


def test_raw_client_only_prints_version_message_json() -> None:
    out = io.StringIO()
    assert run(["version", "--client-only", "--raw"], out, io.StringIO()) == 0
    assert json.loads(out.getvalue()) == {"major": 1, "minor": 7, "micro": 0, "additional": ""}


@pytest.mark.parametrize(
    ("raw", "target"),
    [
        ("localhost:30650", "localhost:30650"),
        ("grpc://10.0.0.1:650", "10.0.0.1:650"),
        ("[::1]:30650", "[::1]:30650"),
    ],
)
def test_address_forms(raw: str, target: str) -> None:
    assert parse_address(raw).target == target


@pytest.mark.parametrize("raw", ["localhost", "grpc://host:", "host:notaport", "host:70000"])
def test_bad_address_is_a_clear_error(raw: str) -> None:
    with pytest.raises(InvalidArgument, match="PACHD_ADDRESS"):
        parse_address(raw)


def test_server_down_prints_one_line_and_exits_1() -> None:
    port = free_port()  # bound then released: nothing listens there
    env = {**os.environ, "PACHD_ADDRESS": f"127.0.0.1:{port}"}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "programs.pachctl", "version"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert time.monotonic() - started < 10
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"pachctl: cannot reach pachd at 127.0.0.1:{port}: connection refused"
    ]
