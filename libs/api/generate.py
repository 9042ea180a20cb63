"""Regenerate the Python protobuf/gRPC code under ``libs/api`` from ``proto/``.

Usage::

    python -m libs.api.generate            # rewrite libs/api from proto/
    python -m libs.api.generate --check    # exit 1 if libs/api is stale

Every ``.proto`` below the proto directory is compiled in-process with
``grpc_tools.protoc`` (messages, gRPC stubs, and mypy-protobuf ``.pyi``
stubs).  Imports between generated modules are rewritten to be absolute under
``libs.api`` so the code works as an ordinary package.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PROTO_DIR = REPO_ROOT / "proto"
DEFAULT_OUT_DIR = REPO_ROOT / "libs" / "api"
PACKAGE_PREFIX = "libs.api"

# Files the generator owns inside the output directory (besides __init__.py).
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
INIT_TEXT = "# Generated package marker; see libs/api/generate.py.\n"


class GenerationError(Exception):
    """protoc failed or a plugin is missing."""


@dataclass(frozen=True)
class Diff:
    """Differences between a fresh generation and the output directory."""

    changed: tuple[str, ...]
    missing: tuple[str, ...]
    extra: tuple[str, ...]

    @property
    def clean(self) -> bool:
        return not (self.changed or self.missing or self.extra)

    def describe(self) -> str:
        lines: list[str] = []
        for label, paths in (
            ("stale", self.changed),
            ("missing", self.missing),
            ("no longer generated", self.extra),
        ):
            lines.extend(f"  {label}: {p}" for p in paths)
        return "\n".join(lines)


def find_protos(proto_dir: Path) -> list[str]:
    """All .proto files under ``proto_dir``, relative to it, sorted."""
    return sorted(p.relative_to(proto_dir).as_posix() for p in proto_dir.rglob("*.proto"))


def _plugin(name: str) -> Path:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return candidate
    found = shutil.which(name)
    if found is None:
        raise GenerationError(f"protoc plugin {name!r} not found (install mypy-protobuf)")
    return Path(found)


def run_protoc(proto_dir: Path, protos: Sequence[str], out_dir: Path) -> None:
    """Compile ``protos`` (relative to ``proto_dir``) into ``out_dir``."""
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_dir}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out=quiet:{out_dir}",
        f"--mypy_grpc_out=quiet:{out_dir}",
        *protos,
    ]
    code = protoc.main(args)
    if code != 0:
        raise GenerationError(f"protoc exited with status {code}")


def generated_modules(protos: Iterable[str]) -> list[str]:
    """Dotted module names (relative to libs.api) of the message modules."""
    return [p.removesuffix(".proto").replace("/", ".") + "_pb2" for p in protos]


def rewrite_imports(text: str, modules: Iterable[str]) -> str:
    """Make imports of our own generated modules absolute under libs.api."""
    for module in sorted(modules, key=len, reverse=True):
        package, _, name = module.rpartition(".")
        if package:
            text = re.sub(
                rf"^from {re.escape(package)} import {name}\b",
                f"from {PACKAGE_PREFIX}.{package} import {name}",
                text,
                flags=re.MULTILINE,
            )
        else:
            text = re.sub(
                rf"^import {name}\b",
                f"from {PACKAGE_PREFIX} import {name}",
                text,
                flags=re.MULTILINE,
            )
        # Fully qualified references, e.g. ``import pfs.pfs_pb2`` in stubs.
        text = re.sub(
            rf"(?<![\w.]){re.escape(module)}\b",
            f"{PACKAGE_PREFIX}.{module}",
            text,
        )
    return text


def generate(proto_dir: Path) -> dict[str, str]:
    """Generate everything; return {path relative to the out dir: text}."""
    protos = find_protos(proto_dir)
    if not protos:
        raise GenerationError(f"no .proto files under {proto_dir}")
    modules = generated_modules(protos)
    files: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="pach-protoc-") as tmp:
        tmp_dir = Path(tmp)
        run_protoc(proto_dir, protos, tmp_dir)
        for path in sorted(tmp_dir.rglob("*")):
            if path.is_file():
                rel = path.relative_to(tmp_dir).as_posix()
                files[rel] = rewrite_imports(path.read_text(encoding="utf-8"), modules)
    packages = {Path(rel).parent for rel in files}
    for package in list(packages):
        packages.update(p for p in package.parents if p != Path("."))
    for package in packages:
        if package != Path("."):
            files.setdefault((package / "__init__.py").as_posix(), INIT_TEXT)
    return dict(sorted(files.items()))


def _is_generated(rel: str) -> bool:
    return rel.endswith(GENERATED_SUFFIXES)


def existing_generated(out_dir: Path) -> set[str]:
    """Generated-looking files currently in ``out_dir``."""
    return {
        p.relative_to(out_dir).as_posix()
        for p in out_dir.rglob("*")
        if p.is_file() and _is_generated(p.name)
    }


def compare(files: dict[str, str], out_dir: Path) -> Diff:
    changed: list[str] = []
    missing: list[str] = []
    for rel, text in files.items():
        target = out_dir / rel
        if not target.exists():
            missing.append(rel)
        elif target.read_text(encoding="utf-8") != text:
            changed.append(rel)
    extra = sorted(existing_generated(out_dir) - set(files))
    return Diff(tuple(changed), tuple(missing), tuple(extra))


def write(files: dict[str, str], out_dir: Path) -> Diff:
    """Bring ``out_dir`` in line with ``files``; return what changed."""
    diff = compare(files, out_dir)
    for rel in (*diff.changed, *diff.missing):
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(files[rel], encoding="utf-8")
    for rel in diff.extra:
        (out_dir / rel).unlink()
    return diff


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libs.api.generate", description=__doc__)
    parser.add_argument("--proto-dir", type=Path, default=DEFAULT_PROTO_DIR)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if the output is stale"
    )
    args = parser.parse_args(argv)
    proto_dir: Path = args.proto_dir.resolve()
    out_dir: Path = args.out_dir.resolve()
    try:
        files = generate(proto_dir)
    except GenerationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.check:
        diff = compare(files, out_dir)
        if diff.clean:
            print(f"{out_dir} is up to date ({len(files)} files)")
            return 0
        print(
            f"generated code in {out_dir} is stale; run `python -m libs.api.generate`:\n"
            f"{diff.describe()}",
            file=sys.stderr,
        )
        return 1
    diff = write(files, out_dir)
    print(f"wrote {len(diff.changed) + len(diff.missing)} files, removed {len(diff.extra)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
