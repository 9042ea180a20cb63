"""The import contracts of `make lint` (``[tool.importlinter]`` in pyproject.toml;
docs/decisions/0013-import-contracts.md).

The real tree keeps every contract. Then, in one copy of the tree (the ``*.py``
of libs/, services/ and programs/ plus pyproject.toml), each case plants one
offending import, runs ``lint-imports`` there, and checks that it fails naming
exactly the contract that import breaks; the planted line is taken out again
before the next case.

An exception (``ignore_imports``) that no longer matches an import fails
``lint-imports`` (the last test), so none can outlive its reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("libs", "services", "programs")

_CONFIG = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
NAMES: dict[str, str] = {c["id"]: c["name"] for c in _CONFIG["contracts"]}


def lint_imports(root: Path) -> tuple[int, str, dict[str, str]]:
    """Runs lint-imports with ``root`` as the project; returns its exit code,
    its output and each contract's verdict by id (KEPT or BROKEN)."""
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "500", "NO_COLOR": "1"}
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = proc.stdout + proc.stderr
    verdicts = {}
    for cid, name in NAMES.items():
        found = re.search(re.escape(name) + r" (KEPT|BROKEN)", out)
        if found:
            verdicts[cid] = found.group(1)
    return proc.returncode, out, verdicts


def test_the_config_names_the_six_contracts() -> None:
    assert set(NAMES) == {
        "services-independent",
        "libs-below-services",
        "domain-no-io",
        "events-no-cluster-state-or-feature-types",
        "gateway-transports-independent",
        "pachctl-no-services",
    }


def test_the_real_tree_keeps_every_contract() -> None:
    code, out, verdicts = lint_imports(REPO_ROOT)
    assert code == 0, out
    assert verdicts == dict.fromkeys(NAMES, "KEPT"), out


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")

    def not_python(directory: str, names: list[str]) -> list[str]:
        return [
            n
            for n in names
            if n == "__pycache__" or (not n.endswith(".py") and not Path(directory, n).is_dir())
        ]

    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, root / package, ignore=not_python)
    shutil.copy(REPO_ROOT / "pyproject.toml", root)
    return root


@contextmanager
def planted(path: Path, line: str) -> Iterator[None]:
    original = path.read_text()
    path.write_text(original + "\n" + line + "\n")
    try:
        yield
    finally:
        path.write_text(original)


# (contract broken, file the import goes into, the import, the module it
# imports). The files are package __init__ modules, which every refactor keeps.
PLANTS = [
    (
        "services-independent",
        "services/pfs/app/__init__.py",
        "import services.pps.domain",
        "services.pps.domain",
    ),
    (
        "libs-below-services",
        "libs/objects/__init__.py",
        "import services.gateway",
        "services.gateway",
    ),
    (
        "libs-below-services",
        "libs/events/__init__.py",
        "import programs.pachctl",
        "programs.pachctl",
    ),
    ("domain-no-io", "services/pps/domain/__init__.py", "import nats", "nats"),
    ("domain-no-io", "services/auth/domain/__init__.py", "import libs.objects", "libs.objects"),
    # The libs.events package re-exports the event store: a domain imports
    # the pure submodules (libs.events.envelope, .registry), not the package.
    (
        "domain-no-io",
        "services/pfs/domain/__init__.py",
        "from libs.events import AggregateRef",
        "libs.events",
    ),
    (
        "events-no-cluster-state-or-feature-types",
        "libs/events/__init__.py",
        "import libs.restore_gate",
        "libs.restore_gate",
    ),
    (
        "events-no-cluster-state-or-feature-types",
        "libs/events/__init__.py",
        "from libs.api.events import pfs_pb2",
        "libs.api.events.pfs_pb2",
    ),
    (
        "gateway-transports-independent",
        "services/gateway/grpc/__init__.py",
        "import services.gateway.http",
        "services.gateway.http",
    ),
    (
        "pachctl-no-services",
        "programs/pachctl/__init__.py",
        "import services.gateway.app",
        "services.gateway.app",
    ),
]


def module_of(where: str) -> str:
    return where.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


@pytest.mark.parametrize(
    ("contract", "where", "line", "imported"), PLANTS, ids=[f"{p[0]}: {p[2]}" for p in PLANTS]
)
def test_a_planted_import_breaks_its_contract(
    tree: Path, contract: str, where: str, line: str, imported: str
) -> None:
    with planted(tree / where, line):
        code, out, verdicts = lint_imports(tree)
    assert code != 0, out
    assert verdicts[contract] == "BROKEN", out
    # Its report names the planted import (a libs -> services import may
    # break services-independent too: services reach one another through it).
    report = out[out.index("Broken contracts") :]
    assert f"{module_of(where)} -> {imported} (l." in report, out


def test_every_contract_has_a_planted_violation() -> None:
    assert {p[0] for p in PLANTS} == set(NAMES)


def test_an_ignore_that_matches_nothing_fails(tree: Path) -> None:
    """An ignored import that is gone from the code fails the run, naming it."""
    config = tree / "pyproject.toml"
    original = config.read_text()
    edited = original.replace(
        'forbidden_modules = ["services"]',
        'forbidden_modules = ["services"]\nignore_imports = ["programs.pachctl -> services"]',
    )
    assert edited != original
    try:
        config.write_text(edited)
        code, out, _ = lint_imports(tree)
    finally:
        config.write_text(original)
    assert code != 0, out
    assert "programs.pachctl -> services" in out, out
