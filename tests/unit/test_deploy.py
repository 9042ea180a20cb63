"""deploy/: every Kubernetes manifest parses and names itself; every
service has a Deployment running the one image; NATS is a 3-replica
JetStream StatefulSet; the gateway is reachable on NodePorts 30650/30080."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SERVICES = ("pfs", "pps", "auth", "enterprise", "admin", "gateway")


def _docs() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path, doc))
    return out


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in _docs() if d["kind"] == kind}


def test_every_manifest_has_kind_and_name() -> None:
    docs = _docs()
    assert len(docs) >= 10
    for path, doc in docs:
        assert isinstance(doc, dict), path
        assert doc.get("kind"), path
        assert doc.get("metadata", {}).get("name"), path


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_a_deployment(service: str) -> None:
    dep = _by_kind("Deployment")[service]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SERVICE"] == service
    refs = [next(iter(r.values()))["name"] for r in container["envFrom"]]
    assert "pachyderm-config" in refs
    assert dep["spec"]["selector"]["matchLabels"] == {"app": service}
    assert dep["spec"]["template"]["metadata"]["labels"]["app"] == service


def test_config_map_holds_s3_and_mongo_settings() -> None:
    data = _by_kind("ConfigMap")["pachyderm-config"]["data"]
    assert data["PACH_OBJECT_BACKEND"] == "s3"
    assert data["PACH_READMODEL_BACKEND"] == "mongo"
    assert data["MONGODB_URI"].startswith("mongodb://")
    assert data["PACH_NATS_URL"] == "nats://nats:4222"


def test_nats_is_a_three_replica_jetstream_statefulset() -> None:
    sts = _by_kind("StatefulSet")["nats"]
    assert sts["spec"]["replicas"] == 3
    conf = _by_kind("ConfigMap")["nats-config"]["data"]["nats.conf"]
    assert "jetstream" in conf and "cluster" in conf


def test_gateway_node_ports() -> None:
    svc = _by_kind("Service")["pachd"]
    assert svc["spec"]["type"] == "NodePort"
    assert {p["nodePort"] for p in svc["spec"]["ports"]} == {30650, 30080}


def test_dockerfile_runs_the_selected_service() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert "pip install ." in text
    assert "python -m services.$SERVICE" in text


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_takes_its_own_nats_credential_from_a_secret(service: str) -> None:
    container = _by_kind("Deployment")[service]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["PACH_NATS_USER"]["value"] == service
    ref = env["PACH_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "pachyderm-nats", "key": service}
    if service == "pps":  # the workers' credential, handed to each worker
        ref = env["PACH_NATS_WORKER_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "pachyderm-nats", "key": "pps-worker"}
    else:
        assert "PACH_NATS_WORKER_PASSWORD" not in env


def test_nats_requires_the_users_from_a_secret() -> None:
    conf = _by_kind("ConfigMap")["nats-config"]["data"]["nats.conf"]
    assert 'include "auth/auth.conf"' in conf and "no_auth_user" not in conf
    pod = _by_kind("StatefulSet")["nats"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["auth"]["secret"]["secretName"] == "pachyderm-nats-server"
