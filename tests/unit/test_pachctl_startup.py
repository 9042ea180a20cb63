"""pachctl starts fast: only the command that runs imports its group (and
the gRPC stubs it needs), so a command that contacts no server loads no
gRPC, protobuf or service library at all (docs/decisions/
0032-pachctl-lazy-start.md). Each check runs in a fresh interpreter."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from programs.pachctl.cli import run
from programs.pachctl.commands import _BY_GROUP, COMMANDS, GROUPS, load

# What no client-only command may load: the gRPC/protobuf stack, the
# services' and deploy's libraries.
HEAVY = (
    "grpc",
    "google.protobuf",
    "libs.api",
    "asyncio",
    "structlog",
    "aiohttp",
    "nats",
    "boto3",
    "botocore",
    "azure",
    "kubernetes",
    "kubernetes_asyncio",
    "yaml",
    "libs.pps",
    "libs.trees",
    "libs.objects",
    "urllib.request",
    "dataclasses",
)


def _loaded_after(argv: list[str], env: dict[str, str] | None = None) -> tuple[str, set[str]]:
    """``run(argv)`` in a fresh interpreter, set up as ``__main__`` sets it
    up: its output and the modules it loaded."""
    code = (
        "import io, json, sys\n"
        "from programs.pachctl import lean_imports\n"
        "from programs.pachctl.cli import run\n"
        "lean_imports.install()\n"
        "out = io.StringIO()\n"
        "run(json.loads(sys.argv[1]), out)\n"
        "loaded = [n for n, m in sys.modules.items() if not isinstance(m, lean_imports.StandIn)]\n"
        "print(json.dumps([out.getvalue(), loaded]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(argv)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    text, modules = json.loads(done.stdout)
    return text, set(modules)


def _heavy(modules: set[str], names: tuple[str, ...] = HEAVY) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in names))


def _groups(modules: set[str]) -> set[str]:
    prefix = "programs.pachctl.commands."
    return {m.removeprefix(prefix) for m in modules if m.startswith(prefix)}


def test_the_manifest_names_exactly_what_each_group_registers() -> None:
    assert set(_BY_GROUP) == set(GROUPS)
    for group in GROUPS:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        load(group).register(sub)
        assert tuple(sub.choices) == _BY_GROUP[group], group
    every = [c for cmds in _BY_GROUP.values() for c in cmds]
    assert len(every) == len(set(every)) == len(COMMANDS)


def test_version_client_only_loads_no_grpc_and_no_other_group() -> None:
    out, modules = _loaded_after(["version", "--client-only"])
    assert out.splitlines()[1].split() == ["pachctl", "1.7.0"]
    assert _heavy(modules) == []
    assert _groups(modules) == {"version"}


def test_list_repo_loads_only_its_group_and_its_stubs() -> None:
    # no server listens on port 1: the command fails, after importing what it needs
    env = {**os.environ, "PACHD_ADDRESS": "127.0.0.1:1"}
    out, modules = _loaded_after(["list-repo"], env=env)
    assert out == ""
    assert "libs.api.pfs.pfs_pb2_grpc" in modules
    assert _groups(modules) == {"repo"}
    needed = ("grpc", "google.protobuf", "libs.api")
    unneeded = tuple(h for h in HEAVY if h not in needed)
    assert _heavy(modules, (*unneeded, "libs.api.pps", "libs.api.admin")) == []
    # pachctl's calls are synchronous: grpc's asyncio half stays unloaded
    assert "grpc.aio" not in modules


def _imported_by(argv: list[str], env: dict[str, str]) -> set[str]:
    """The modules ``python -m programs.pachctl argv`` imports (the console
    script runs the same ``main``), as ``-X importtime`` lists them."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "programs.pachctl", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip() for line in lines[1:]}


def test_list_repo_as_users_start_it_imports_grpc_without_asyncio(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PACHD_ADDRESS": "127.0.0.1:1",
        "PACH_CONFIG": str(tmp_path / "none.json"),  # logged out: no config file
    }
    modules = _imported_by(["list-repo"], env)
    assert {"grpc", "grpc._channel", "libs.api.pfs.pfs_pb2_grpc"} <= modules
    # grpc's asyncio half, protobuf's pure-Python one, and a config reader
    unused = (
        *("asyncio", "grpc.aio", "inspect", "socket", "ssl"),
        *("google.protobuf.internal.python_message", "google.protobuf.text_format", "pickle"),
        "json",
    )
    assert _heavy(modules, unused) == []


def _python(code: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_grpc_loaded_without_asyncio_still_hands_over_asyncio_and_grpc_aio() -> None:
    # what a stand-in must do if anything uses it: import the real module
    code = (
        "import sys\n"
        "from programs.pachctl import lean_imports\n"
        "lean_imports.install()\n"
        "import grpc\n"
        "assert not {'asyncio', 'grpc.aio', 'inspect', 'socket'} & set(sys.modules)\n"
        "import asyncio, socket\n"
        "assert socket.socket and asyncio.run.__module__ == 'asyncio.runners'\n"
        "async def main():\n"
        "    async with grpc.aio.insecure_channel('127.0.0.1:1') as channel:\n"
        "        return channel.get_state()\n"
        "print(asyncio.run(main()).name)\n"
        "assert sys.modules['grpc.aio'] is grpc.aio and grpc.aio.__spec__ is not None\n"
    )
    assert _python(code) == "IDLE"


@pytest.mark.parametrize("backend", ["upb", "python"])
def test_protobuf_loaded_without_its_pure_python_half_still_works(backend: str) -> None:
    code = (
        "import sys\n"
        "from programs.pachctl import lean_imports\n"
        "lean_imports.install()\n"
        "from libs.api.pfs import pfs_pb2 as pfs\n"
        "info = pfs.RepoInfo(repo=pfs.Repo(name='images'), size_bytes=3)\n"
        "again = pfs.RepoInfo.FromString(info.SerializeToString())\n"
        "assert again == info and 'images' in str(again)\n"
        "from google.protobuf.internal import python_message\n"
        "assert python_message.GeneratedProtocolMessageType\n"  # the real one
        "print(type(sys.modules[lean_imports.PROTOBUF_PURE_PYTHON]).__name__)\n"
    )
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": backend}
    assert _python(code, env) == "module"


def test_lean_imports_leaves_what_is_loaded_already() -> None:
    code = (
        "import sys, grpc\n"
        "from google.protobuf import descriptor_pool\n"
        "from programs.pachctl import lean_imports\n"
        "lean_imports.install()\n"
        "assert not [f for f in sys.meta_path if type(f).__module__ == 'libs.lean_imports']\n"
        "print(type(sys.modules[lean_imports.PROTOBUF_PURE_PYTHON]).__name__)\n"
    )
    assert _python(code) == "module"


def test_put_file_loads_only_the_file_groups() -> None:
    env = {**os.environ, "PACHD_ADDRESS": "127.0.0.1:1"}
    _, modules = _loaded_after(["put-file", "r", "master", "/a", "-f", "/dev/null"], env=env)
    assert _groups(modules) == {"file", "putfile"}
    assert (
        _heavy(
            modules, ("structlog", "aiohttp", "yaml", "libs.pps", "urllib.request", "dataclasses")
        )
        == []
    )


@pytest.mark.parametrize("argv", [[], ["no-such-command"]])
def test_help_and_unknown_commands_still_see_every_command(argv: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    run(argv, out, err)
    shown = out.getvalue() + err.getvalue()
    for command in COMMANDS:
        assert command in shown, command
