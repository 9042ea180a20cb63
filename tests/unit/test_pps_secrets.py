"""Secret manifests and transform.secrets references (pure), and the local
secret store's layout and modes."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from libs.api.pps import pps_pb2 as pps
from libs.errors import InvalidArgument, NotFound
from services.pps.adapters.secrets import SecretStore
from services.pps.domain.secrets import check_transform_secrets, parse_manifest


def doc(**fields: object) -> bytes:
    base: dict[str, object] = {"kind": "Secret", "metadata": {"name": "s"}}
    base.update(fields)
    return json.dumps(base).encode()


def test_manifest_json_and_yaml() -> None:
    got = parse_manifest(doc(data={"a": base64.b64encode(b"x").decode()}, stringData={"b": "y"}))
    assert (got.name, got.type, got.data) == ("s", "Opaque", {"a": b"x", "b": b"y"})
    yaml_doc = b"kind: Secret\nmetadata:\n  name: t\ntype: kubernetes.io/basic-auth\n"
    got = parse_manifest(yaml_doc + b"stringData:\n  k: v\n")
    assert (got.name, got.type, got.data) == ("t", "kubernetes.io/basic-auth", {"k": b"v"})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[1]", "must be an object"),
        (b"{", "neither JSON nor YAML"),
        (doc(kind="ConfigMap"), "kind must be Secret"),
        (doc(metadata={}), "metadata.name"),
        (doc(metadata={"name": "UP"}), "not valid"),
        (doc(data={"k": "%%"}), "not base64"),
        (doc(data={"../x": "eA=="}), "key '../x' is not valid"),
        (doc(stringData={"k": 1}), "must be a string"),
        (doc(extra=1), "unknown field"),
    ],
)
def test_bad_manifests(data: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as info:
        parse_manifest(data)
    assert "eA==" not in str(info.value)


def test_transform_secret_references() -> None:
    ok = [pps.Secret(name="s", key="k", env_var="A"), pps.Secret(name="s", mount_path="/s/x")]
    check_transform_secrets("p", ok)
    for bad, message in (
        (pps.Secret(name="s"), "neither env_var nor mount_path"),
        (pps.Secret(name="s", env_var="A"), "key is missing"),
        (pps.Secret(name="s", key="k", env_var="1A"), "not a variable name"),
        (pps.Secret(name="s", mount_path="/pfs"), "outside /pfs"),
        (pps.Secret(name="s", mount_path="/a/../b"), "normalized"),
        (pps.Secret(mount_path="/a"), "name is missing"),
    ):
        with pytest.raises(InvalidArgument, match=message):
            check_transform_secrets("p", [bad])


def test_store_layout_modes_and_replace(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "secrets")
    store.put(parse_manifest(doc(stringData={"a": "1", "b": "2"})))
    d = store.dir_of("s")
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "a").stat().st_mode) == 0o600
    assert store.value("s", "a") == "1"
    store.put(parse_manifest(doc(stringData={"c": "3"})))  # replaced whole
    assert store.inspect("s").keys == ("c",)
    assert list(store.names()) == ["s"]
    with pytest.raises(NotFound, match="no key 'a'"):
        store.value("s", "a")
    store.delete("s")
    assert list(store.names()) == []
    with pytest.raises(NotFound, match="secret 's' not found"):
        store.dir_of("s")
