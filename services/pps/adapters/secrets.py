"""The local secret store, laid out like a mounted Kubernetes Secret:
``<root>/data/<name>/<key>`` (directories 0700, files 0600, the value as the
file's bytes) and ``<root>/info/<name>.json`` (type and creation time; no
values). ``<root>`` is ``<data dir>/secrets`` by default.

Secrets never enter the event log, the read models or an extract: they
live only here, on the machine of the pps service that received them (and
of the workers it starts). A secret is replaced whole: the new directory
is written beside the old one and renamed over it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from libs.errors import InvalidArgument, NotFound
from services.pps.domain.secrets import SecretManifest, check_name


@dataclass(frozen=True)
class StoredSecret:
    name: str
    type: str
    created_ns: int
    keys: tuple[str, ...]


def default_root(data_dir: Path) -> Path:
    return data_dir / "secrets"


class SecretStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _ensure(self) -> None:
        for d in (self.root, self.root / "data", self.root / "info"):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chmod(d, 0o700)

    def dir_of(self, name: str) -> Path:
        """The directory holding ``name``'s keys (NotFound when missing)."""
        check_name(name)
        d = self.root / "data" / name
        if not d.is_dir():
            raise NotFound(
                f"secret {name!r} not found: create it with pachctl create-secret", secret=name
            )
        return d

    def put(self, secret: SecretManifest) -> None:
        self._ensure()
        data = self.root / "data"
        tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=data))  # mode 0700
        try:
            for key, value in secret.data.items():
                fd = os.open(tmp / key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(value)
                    f.flush()
                    os.fsync(f.fileno())
            info = {"type": secret.type, "created_ns": time.time_ns()}
            info_tmp = self.root / "info" / f".{secret.name}.json.tmp"
            fd = os.open(info_tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
            target = data / secret.name
            old = None
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=".old-", dir=data))
                os.rename(target, old / "x")
            os.rename(tmp, target)
            os.replace(info_tmp, self.root / "info" / f"{secret.name}.json")
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def delete(self, name: str) -> None:
        d = self.dir_of(name)
        trash = Path(tempfile.mkdtemp(prefix=".old-", dir=d.parent))
        os.rename(d, trash / "x")
        (self.root / "info" / f"{name}.json").unlink(missing_ok=True)
        shutil.rmtree(trash, ignore_errors=True)

    def inspect(self, name: str) -> StoredSecret:
        d = self.dir_of(name)
        try:
            info = json.loads((self.root / "info" / f"{name}.json").read_text())
        except (OSError, ValueError):
            info = {"type": "Opaque", "created_ns": d.stat().st_mtime_ns}
        keys = tuple(sorted(p.name for p in d.iterdir() if p.is_file()))
        return StoredSecret(name, str(info["type"]), int(info["created_ns"]), keys)

    def names(self) -> Iterator[str]:
        data = self.root / "data"
        if not data.is_dir():
            return
        for entry in sorted(os.listdir(data)):
            if not entry.startswith("."):
                yield entry

    def value(self, name: str, key: str) -> str:
        """One key's value as text (for an environment variable)."""
        path = self.dir_of(name) / key
        if "/" in key or key in (".", "..") or not path.is_file():
            raise NotFound(f"secret {name!r} has no key {key!r}", secret=name, key=key)
        raw = path.read_bytes()
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise InvalidArgument(
                f"secret {name!r}: key {key!r} is not text, so it cannot be an environment "
                "variable (mount it with mount_path)",
                secret=name,
            ) from None
        if "\0" in text:
            raise InvalidArgument(f"secret {name!r}: key {key!r} holds a NUL byte", secret=name)
        return text
