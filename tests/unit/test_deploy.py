"""``pachctl deploy <target> --dry-run``: the manifests are generated from
code (libs/deploy/manifests.py). Every target's output is compared with its
golden file (deploy/kubernetes/pachyderm-local.yaml is the local one) and
validated offline against the Kubernetes OpenAPI schemas of two Kubernetes
versions; the objects say what the cluster needs (one Deployment per
service, probes, autoscalers, budgets, NATS as a 3-node JetStream
StatefulSet, RBAC, NATS credentials from Secrets).

Regenerate the goldens after a deliberate change with
``PACH_UPDATE_GOLDEN=1 pytest tests/unit/test_deploy.py``."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from programs.pachctl.cli import run

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
GOLDEN = Path(__file__).with_name("golden")
SERVICES = ("pfs", "pps", "auth", "enterprise", "admin", "gateway")
K8S_VERSIONS = ("1.29", "1.33")

# target -> (command line after "deploy", golden file)
TARGETS: dict[str, tuple[list[str], Path]] = {
    "local": (["local"], DEPLOY / "kubernetes" / "pachyderm-local.yaml"),
    "amazon": (
        [
            "amazon",
            "my-bucket",
            "us-west-2",
            "50",
            "--credentials",
            "AKIAEXAMPLE,c2VjcmV0",
            "--namespace",
            "pachyderm",
            "--local-roles",
            "--dynamic-etcd-nodes",
            "5",
        ],
        GOLDEN / "deploy-amazon.yaml",
    ),
    "google": (
        [
            "google",
            "my-bucket",
            "20",
            "--registry",
            "gcr.io/proj",
            "--tag",
            "1.7.11",
            "--image-pull-secret",
            "regcred",
            "--no-dashboard",
        ],
        GOLDEN / "deploy-google.yaml",
    ),
    "microsoft": (
        [
            "microsoft",
            "pach-data",
            "pachstore1",
            "c2VjcmV0LWtleQ==",
            "30",
            "--namespace",
            "pachyderm",
        ],
        GOLDEN / "deploy-microsoft.yaml",
    ),
    "custom": (
        [
            "custom",
            "--persistent-disk",
            "aws",
            "--object-store",
            "s3",
            "vol",
            "10",
            "bucket",
            "minio",
            "minio123",
            "minio.minio:9000",
            "--no-rbac",
            "--mongodb-uri",
            "mongodb://mongo:27017",
            "--replicas",
            "pfs=3",
            "--request",
            "pps=500m,1Gi",
            "--nats-nodes",
            "1",
        ],
        GOLDEN / "deploy-custom.yaml",
    ),
}


def pachctl(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), out=out, err=err)
    return code, out.getvalue() + err.getvalue()


def dry_run(target: str, output: str = "yaml") -> list[dict[str, Any]]:
    argv, _ = TARGETS[target]
    # no MONGODB_URI from the environment; a target's own flag comes later and wins
    code, text = pachctl(
        "deploy", argv[0], "--mongodb-uri", "", *argv[1:], "--dry-run", "-o", output
    )
    assert code == 0, text
    if output == "json":
        dec, docs, pos = json.JSONDecoder(), [], 0
        while pos < len(text.strip()):
            obj, end = dec.raw_decode(text, pos)
            docs.append(obj)
            pos = end + 1
        return docs
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_dry_run_matches_its_golden_file(target: str) -> None:
    _, golden = TARGETS[target]
    text = yaml.safe_dump_all(dry_run(target), sort_keys=False)
    if os.environ.get("PACH_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(
            "# Generated: pachctl deploy " + " ".join(TARGETS[target][0]) + " --dry-run -o yaml\n"
            + text
        )  # fmt: skip
    assert golden.exists(), f"{golden} missing: run with PACH_UPDATE_GOLDEN=1"
    assert list(yaml.safe_load_all(golden.read_text())) == list(yaml.safe_load_all(text))


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_manifest_validates_against_the_kubernetes_schema(target: str, version: str) -> None:
    docs = dry_run(target)
    assert len(docs) >= 20
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_json_and_yaml_outputs_are_the_same_objects() -> None:
    assert dry_run("local", "json") == dry_run("local", "yaml")


def test_a_schema_violation_is_caught() -> None:
    """The validation really checks: a wrong type is refused."""
    bad = by_kind(dry_run("local"), "Deployment")["pfs"]
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_its_own_deployment_with_probes(service: str) -> None:
    docs = dry_run("local")
    dep = by_kind(docs, "Deployment")[service]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["SERVICE"]["value"] == service
    assert container["image"] == "pachyderm-es:latest"
    assert {"configMapRef": {"name": "pachyderm-config"}} in container["envFrom"]
    assert dep["spec"]["selector"]["matchLabels"] == {"app": service}
    assert container["readinessProbe"] and container["livenessProbe"]
    if service != "gateway":
        assert container["readinessProbe"]["exec"]["command"][-1] == service
    # its own NATS credential from the Secret
    assert env["PACH_NATS_USER"]["value"] == service
    ref = env["PACH_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "pachyderm-nats", "key": service}
    if service == "pps":
        ref = env["PACH_NATS_WORKER_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "pachyderm-nats", "key": "pps-worker"}
    else:
        assert "PACH_NATS_WORKER_PASSWORD" not in env
    if service == "gateway":  # reachable from other pods, by the Service's name
        assert env["PACH_BIND_ADDRESS"]["value"] == "0.0.0.0"
        assert "pachd.default.svc.cluster.local" in env["PACH_HTTP_ALLOWED_HOSTS"]["value"]
    assert service in by_kind(docs, "PodDisruptionBudget")
    assert (service in by_kind(docs, "HorizontalPodAutoscaler")) == (
        service in ("gateway", "pfs", "pps")
    )


def test_nats_is_a_jetstream_statefulset_with_volumes_and_secret_auth() -> None:
    docs = dry_run("local")
    sts = by_kind(docs, "StatefulSet")["nats"]
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"] == {
        "storage": "10Gi"
    }
    conf = by_kind(docs, "ConfigMap")["nats-config"]["data"]["nats.conf"]
    assert "jetstream" in conf and "routes" in conf and 'include "auth/auth.conf"' in conf
    assert "no_auth_user" not in conf
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["auth"]["secret"]["secretName"] == "pachyderm-nats-server"
    config = by_kind(docs, "ConfigMap")["pachyderm-config"]["data"]
    assert config["PACH_EVENTS_REPLICAS"] == "3"
    # no credentials in the output: deploy makes them in the cluster
    assert not by_kind(docs, "Secret")


def test_amazon_flags_reach_the_objects() -> None:
    docs = dry_run("amazon")
    assert all(d["metadata"].get("namespace", "pachyderm") == "pachyderm" for d in docs)
    assert by_kind(docs, "Namespace")["pachyderm"]
    assert by_kind(docs, "Role")["pachyderm"] and by_kind(docs, "RoleBinding")["pachyderm"]
    assert not by_kind(docs, "ClusterRole")
    sts = by_kind(docs, "StatefulSet")["nats"]
    assert sts["spec"]["replicas"] == 5
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"] == {
        "storage": "50Gi"
    }
    config = by_kind(docs, "ConfigMap")["pachyderm-config"]["data"]
    assert config["PACH_S3_BUCKET"] == "my-bucket"
    assert config["PACH_S3_ENDPOINT"] == "https://s3.us-west-2.amazonaws.com"
    secret = by_kind(docs, "Secret")["pachyderm-storage"]
    assert secret["stringData"]["PACH_S3_ACCESS_KEY"] == "AKIAEXAMPLE"


def test_microsoft_uses_the_azure_backend_a_secret_and_azure_disks() -> None:
    docs = dry_run("microsoft")
    config = by_kind(docs, "ConfigMap")["pachyderm-config"]["data"]
    assert config["PACH_OBJECT_BACKEND"] == "azure"
    assert config["PACH_AZURE_CONTAINER"] == "pach-data"
    assert not any(k.startswith("PACH_S3_") for k in config) and "PACH_OBJECT_DIR" not in config
    # the account and its key only in the Secret every pod (and worker) reads
    assert "PACH_AZURE_KEY" not in config and "PACH_AZURE_ACCOUNT" not in config
    secret = by_kind(docs, "Secret")["pachyderm-storage"]
    assert secret["stringData"] == {
        "PACH_AZURE_ACCOUNT": "pachstore1",
        "PACH_AZURE_KEY": "c2VjcmV0LWtleQ==",
    }
    for dep in by_kind(docs, "Deployment").values():
        spec = dep["spec"]["template"]["spec"]
        env_from = spec["containers"][0]["envFrom"]
        assert {"secretRef": {"name": "pachyderm-storage", "optional": True}} in env_from
        assert not any("hostPath" in v for v in spec.get("volumes", []))
    claim = by_kind(docs, "StatefulSet")["nats"]["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "managed-csi"
    assert claim["resources"]["requests"] == {"storage": "30Gi"}
    # the flags still choose: another StorageClass, a sovereign cloud's endpoint
    argv = TARGETS["microsoft"][0]
    code, text = pachctl(
        "deploy",
        *argv,
        "--etcd-storage-class",
        "managed-csi-premium",
        "--endpoint",
        "https://pachstore1.blob.core.chinacloudapi.cn",
        "--dry-run",
        "-o",
        "yaml",
    )
    assert code == 0, text
    docs = [d for d in yaml.safe_load_all(text) if d]
    claim = by_kind(docs, "StatefulSet")["nats"]["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "managed-csi-premium"
    config = by_kind(docs, "ConfigMap")["pachyderm-config"]["data"]
    assert config["PACH_AZURE_ENDPOINT"] == "https://pachstore1.blob.core.chinacloudapi.cn"


def test_microsoft_settings_are_what_the_cluster_reads() -> None:
    """The ConfigMap and the Secret together make a config the azure
    backend accepts (the names deploy writes are the ones services read)."""
    from libs.config import Config

    docs = dry_run("microsoft")
    env = {
        **by_kind(docs, "ConfigMap")["pachyderm-config"]["data"],
        **by_kind(docs, "Secret")["pachyderm-storage"]["stringData"],
    }
    objects = Config.from_env("pfs", env).objects
    assert (objects.backend, objects.azure_container) == ("azure", "pach-data")
    assert (objects.azure_account, objects.azure_key) == ("pachstore1", "c2VjcmV0LWtleQ==")


def test_deploy_storage_microsoft_values() -> None:
    from programs.pachctl.commands.deploy import storage_values

    assert storage_values("microsoft", ["pachstore1", "a2V5"]) == {
        "PACH_AZURE_ACCOUNT": "pachstore1",
        "PACH_AZURE_KEY": "a2V5",
    }
    code, text = pachctl("deploy", "storage", "microsoft", "pach-data", "acct1", "a2V5")
    assert code == 1 and "takes <account-name> <account-key>" in text
    code, text = pachctl("deploy", "storage", "microsoft", "acct1", "sec ret")
    assert code == 1 and "account key must be" in text and "sec ret" not in text


def test_google_registry_pull_secret_and_no_dashboard() -> None:
    docs = dry_run("google")
    pfs = by_kind(docs, "Deployment")["pfs"]["spec"]["template"]["spec"]
    assert pfs["containers"][0]["image"] == "gcr.io/proj/pachyderm-es:1.7.11"
    assert pfs["imagePullSecrets"] == [{"name": "regcred"}]
    services = by_kind(docs, "Service")
    assert [p["nodePort"] for p in services["pachd"]["spec"]["ports"]] == [30650]
    assert services["pachd-http"]["spec"]["type"] == "ClusterIP"
    assert by_kind(docs, "ClusterRole")["pachyderm"]


def test_custom_minio_mongo_replicas_and_requests() -> None:
    docs = dry_run("custom")
    config = by_kind(docs, "ConfigMap")["pachyderm-config"]["data"]
    assert config["PACH_S3_ENDPOINT"] == "http://minio.minio:9000"
    assert config["PACH_READMODEL_BACKEND"] == "mongo"
    assert config["MONGODB_URI"] == "mongodb://mongo:27017"
    deps = by_kind(docs, "Deployment")
    assert deps["pfs"]["spec"]["replicas"] == 3
    assert by_kind(docs, "HorizontalPodAutoscaler")["pfs"]["spec"]["minReplicas"] == 3
    pps = deps["pps"]["spec"]["template"]["spec"]["containers"][0]
    assert pps["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "Role")
    assert by_kind(docs, "StatefulSet")["nats"]["spec"]["replicas"] == 1
    assert "routes" not in by_kind(docs, "ConfigMap")["nats-config"]["data"]["nats.conf"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["local", "--namespace", "Bad_NS"], "--namespace 'Bad_NS' is not a DNS label"),
        (["local", "--nats-nodes", "12"], "NATS nodes must be 1..9"),
        (["local", "--request", "pfs=lots,1Gi"], "pfs cpu request 'lots' is not a quantity"),
        (["local", "--replicas", "nats=2"], "--replicas 'nats=2'"),
        (["amazon", "b", "us-east-1", "ten"], "disk size 'ten' must be a whole number"),
        (["amazon", "b", "us-east-1", "10", "--credentials", "x"], '"<id>,<secret>"'),
        (["google", "b", "10", "key.json"], "HMAC keys"),
        (["microsoft", "Pach_Data", "acct1", "a2V5", "10"], "container name must be"),
        (["microsoft", "pach--data", "acct1", "a2V5", "10"], "container name must be"),
        (["microsoft", "pach-data", "My-Acct", "a2V5", "10"], "account name must be 3-24"),
        (["microsoft", "pach-data", "acct1", "not base64!", "10"], "account key must be"),
        (["microsoft", "pach-data", "acct1", "a2V5", "0"], "disk size '0'"),
        (
            ["microsoft", "pach-data", "acct1", "a2V5", "10", "--endpoint", "http://x"],
            "must be an https:// URL",
        ),
        (["custom", "vol", "10"], "deploy custom takes"),
        (["local", "--image-pull-secret", "a b"], "is not a name"),
    ],
)
def test_bad_arguments_are_refused_with_a_precise_message(argv: list[str], message: str) -> None:
    code, text = pachctl("deploy", *argv, "--dry-run")
    assert code == 1
    assert message in text and "Traceback" not in text
    assert "{" not in text  # nothing printed


def test_dockerfile_runs_the_selected_service_and_ships_the_driver() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "python -m services.$SERVICE" in text
    assert "pip install ." in text
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"*.sh"' in pyproject  # the datum driver is package data
