"""Secrets: reading a Kubernetes Secret manifest and checking the names a
secret store and a pipeline's ``transform.secrets`` use. Pure: no I/O.

A manifest is JSON or YAML: ``kind: Secret`` (``apiVersion`` optional),
``metadata.name``, ``type`` (default ``Opaque``), ``data`` (values in
base64) and/or ``stringData`` (plain values; they win over ``data``, as in
Kubernetes). Errors name the field and never the value."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from libs.api.pps import pps_pb2 as pps
from libs.errors import InvalidArgument

# Kubernetes: a secret's name is a DNS subdomain, a key [-._a-zA-Z0-9]+.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_SECRET_BYTES = 1 << 20  # Kubernetes' limit on a Secret's data


@dataclass(frozen=True)
class SecretManifest:
    name: str
    type: str
    data: dict[str, bytes]


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidArgument(
            f"secret name {name!r} is not valid: lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit",
            secret=name,
        )
    return name


def _check_key(secret: str, key: str) -> None:
    if not _KEY.match(key) or key in (".", ".."):
        raise InvalidArgument(
            f"secret {secret!r}: key {key!r} is not valid: letters, digits, '-', '_' and '.'",
            secret=secret,
        )


def parse_manifest(data: bytes) -> SecretManifest:
    """The secret a manifest describes (see the module doc)."""
    if len(data) > 2 * MAX_SECRET_BYTES:
        raise InvalidArgument("the secret manifest is larger than 2 MiB")
    try:
        text = data.decode("utf-8")
        doc: Any = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (UnicodeDecodeError, ValueError, yaml.YAMLError):
        raise InvalidArgument("the secret manifest is neither JSON nor YAML") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("the secret manifest must be an object (kind: Secret)")
    if doc.get("kind") != "Secret":
        raise InvalidArgument(f"the manifest's kind must be Secret, got {doc.get('kind')!r}")
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str):
        raise InvalidArgument("the secret manifest needs metadata.name")
    check_name(name)
    kind = doc.get("type", "Opaque")
    if not isinstance(kind, str) or not kind:
        raise InvalidArgument(f"secret {name!r}: type must be a string")
    values: dict[str, bytes] = {}
    for field, decode in (("data", _b64), ("stringData", _utf8)):
        section = doc.get(field)
        if section is None:
            continue
        if not isinstance(section, dict):
            raise InvalidArgument(f"secret {name!r}: {field} must be an object")
        for key, value in section.items():
            if not isinstance(key, str):
                raise InvalidArgument(f"secret {name!r}: {field} has a key that is not a string")
            _check_key(name, key)
            if not isinstance(value, str):
                raise InvalidArgument(f"secret {name!r}: {field}.{key} must be a string")
            values[key] = decode(name, f"{field}.{key}", value)
    if sum(len(v) for v in values.values()) > MAX_SECRET_BYTES:
        raise InvalidArgument(f"secret {name!r}: its data is larger than 1 MiB")
    unknown = set(doc) - {"apiVersion", "kind", "metadata", "type", "data", "stringData"}
    if unknown:
        raise InvalidArgument(f"secret {name!r}: unknown field {sorted(unknown)[0]!r}")
    return SecretManifest(name, kind, values)


def _b64(secret: str, where: str, value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"secret {secret!r}: {where} is not base64") from None


def _utf8(_secret: str, _where: str, value: str) -> bytes:
    return value.encode()


_RESERVED_MOUNTS = ("/pfs", "/proc", "/dev")


def check_transform_secrets(pipeline: str, secrets: Sequence[pps.Secret]) -> None:
    """``transform.secrets``: each names a secret and either ``env_var``
    with ``key``, or an absolute ``mount_path`` (or both)."""
    for i, s in enumerate(secrets):
        where = f"transform.secrets[{i}]"
        if not s.name:
            raise InvalidArgument(f"pipeline {pipeline!r}: {where}.name is missing", field=where)
        check_name(s.name)
        if not s.env_var and not s.mount_path:
            raise InvalidArgument(
                f"pipeline {pipeline!r}: {where} sets neither env_var nor mount_path", field=where
            )
        if s.env_var:
            if not _ENV.match(s.env_var):
                raise InvalidArgument(
                    f"pipeline {pipeline!r}: {where}.env_var {s.env_var!r} is not a variable name",
                    field=where,
                )
            if not s.key:
                raise InvalidArgument(
                    f"pipeline {pipeline!r}: {where}.key is missing: env_var takes one key",
                    field=where,
                )
            _check_key(s.name, s.key)
        if s.mount_path:
            path = s.mount_path
            parts = path.split("/")
            bad = (
                not path.startswith("/")
                or path == "/"
                or any(p in ("", ".", "..") for p in parts[1:])
                or any(path == r or path.startswith(r + "/") for r in _RESERVED_MOUNTS)
            )
            if bad:
                raise InvalidArgument(
                    f"pipeline {pipeline!r}: {where}.mount_path {path!r} must be an absolute, "
                    "normalized path outside /pfs, /proc and /dev",
                    field=where,
                )
