"""``pachctl deploy`` (apply and wait), ``deploy storage`` and ``undeploy``
as real pachctl processes against a Kubernetes API emulator process
(tests/support/kube_emulator.py), through kubernetes-asyncio over HTTP. The
test plays the kubelet: it marks the Deployments and the StatefulSet ready
while deploy waits."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from libs.deploy import kube
from tests.support import kube_emulator

NS = "pachyderm"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def emulator(tmp_path: Path):
    with kube_emulator.start(tmp_path) as (_port, config):
        yield config


async def pachctl(config: Path, *argv: str, timeout: float = 60) -> tuple[int, str]:
    env = {**os.environ, "KUBECONFIG": str(config)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "programs.pachctl",
        *argv,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode()


async def mark_ready(k: kube.Kube, stop: asyncio.Event) -> None:
    """The kubelet's part: every Deployment and StatefulSet's pods ready."""
    while not stop.is_set():
        for kind in ("Deployment", "StatefulSet"):
            for obj in await k.list(kind, NS):
                want = obj["spec"].get("replicas", 1)
                if (obj.get("status") or {}).get("readyReplicas") != want:
                    await k.patch(
                        kind, NS, obj["metadata"]["name"], {"status": {"readyReplicas": want}}
                    )
        await asyncio.sleep(0.2)


async def test_deploy_applies_waits_and_undeploy_removes(emulator: Path) -> None:
    api = await kube.connect(str(emulator))
    async with api:
        k = kube.Kube(api)
        stop = asyncio.Event()
        kubelet = asyncio.create_task(mark_ready(k, stop))
        try:
            code, out = await pachctl(emulator, "deploy", "local", "--namespace", NS)
        finally:
            stop.set()
            await kubelet
        assert code == 0, out
        assert f"namespace/{NS} created" in out
        assert "secret/pachyderm-nats created" in out
        assert "deployment/pfs ready" in out and "statefulset/nats ready" in out
        assert "Pachyderm is ready" in out
        for kind, name in [
            ("Deployment", s) for s in ("pfs", "pps", "auth", "enterprise", "admin", "gateway")
        ] + [
            ("StatefulSet", "nats"),
            ("Service", "pachd"),
            ("ClusterRole", "pachyderm"),
            ("HorizontalPodAutoscaler", "pps"),
            ("PodDisruptionBudget", "nats"),
        ]:
            assert await k.get(kind, NS, name) is not None, (kind, name)
        nats: Any = await k.get("Secret", NS, "pachyderm-nats")
        server: Any = await k.get("Secret", NS, "pachyderm-nats-server")
        passwords = nats.get("stringData") or nats.get("data")
        assert set(passwords) >= {"pfs", "pps", "gateway", "pps-worker"}
        assert "operator" not in passwords
        auth = (server.get("stringData") or server.get("data"))["auth.conf"]
        assert "$2b$" in auth and passwords["pfs"] not in auth  # hashes only

        # again, with another replica count: patched, credentials kept
        stop = asyncio.Event()
        kubelet = asyncio.create_task(mark_ready(k, stop))
        try:
            code, out = await pachctl(
                emulator, "deploy", "local", "--namespace", NS, "--replicas", "gateway=3"
            )
        finally:
            stop.set()
            await kubelet
        assert code == 0, out
        assert "deployment/gateway configured" in out and "secret/" not in out
        gateway: Any = await k.get("Deployment", NS, "gateway")
        assert gateway["spec"]["replicas"] == 3
        again: Any = await k.get("Secret", NS, "pachyderm-nats")
        assert (again.get("stringData") or again.get("data")) == passwords

        code, out = await pachctl(
            emulator,
            "deploy",
            "storage",
            "amazon",
            "us-west-2",
            "AKIAEXAMPLE",
            "c2VjcmV0",
            "--namespace",
            NS,
        )
        assert code == 0 and "secret/pachyderm-storage created" in out, out
        storage: Any = await k.get("Secret", NS, "pachyderm-storage")
        assert storage["stringData"]["PACH_S3_ACCESS_KEY"] == "AKIAEXAMPLE"

        code, out = await pachctl(emulator, "undeploy", "--namespace", NS)
        assert code == 0, out
        assert "deployment/pfs deleted" in out and "statefulset/nats deleted" in out
        assert "clusterrole/pachyderm deleted" in out
        assert await k.get("Deployment", NS, "pfs") is None
        assert await k.get("Service", NS, "pachd") is None
        # the credentials and the volumes stay without --all
        assert await k.get("Secret", NS, "pachyderm-nats") is not None
        code, out = await pachctl(emulator, "undeploy", "--all", "--namespace", NS)
        assert code == 0, out
        for name in ("pachyderm-nats", "pachyderm-nats-server", "pachyderm-storage"):
            assert await k.get("Secret", NS, name) is None


async def test_deploy_gives_up_after_its_timeout_naming_what_is_not_ready(emulator: Path) -> None:
    code, out = await pachctl(
        emulator, "deploy", "local", "--namespace", NS, "--timeout", "1", "--nats-nodes", "1"
    )
    assert code == 1
    assert "not ready after 1s" in out and "deployment/pfs" in out
    assert "Traceback" not in out


async def test_deploy_refuses_half_of_the_nats_credentials(emulator: Path) -> None:
    api = await kube.connect(str(emulator))
    async with api:
        k = kube.Kube(api)
        await k.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "pachyderm-nats", "namespace": NS},
                "stringData": {"pfs": "x"},
            }
        )
        code, out = await pachctl(emulator, "deploy", "local", "--namespace", NS, "--timeout", "1")
        assert code == 1 and "pachyderm-nats-server is missing" in out, out
        assert await k.get("Deployment", NS, "pfs") is None  # nothing applied


async def test_no_cluster_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    code, out = await pachctl(missing, "undeploy")
    assert code == 1 and "no Kubernetes cluster to talk to" in out and "Traceback" not in out


async def test_deploy_storage_microsoft_creates_then_updates_the_secret(emulator: Path) -> None:
    api = await kube.connect(str(emulator))
    async with api:
        k = kube.Kube(api)
        await k.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        code, out = await pachctl(
            emulator, "deploy", "storage", "microsoft", "pachstore1", "a2V5MQ==", "--namespace", NS
        )
        assert code == 0 and "secret/pachyderm-storage created" in out, out
        code, out = await pachctl(
            emulator, "deploy", "storage", "microsoft", "pachstore1", "a2V5Mg==", "--namespace", NS
        )
        assert code == 0 and "secret/pachyderm-storage configured" in out, out
        secret: Any = await k.get("Secret", NS, "pachyderm-storage")
        assert (secret.get("stringData") or secret.get("data")) == {
            "PACH_AZURE_ACCOUNT": "pachstore1",
            "PACH_AZURE_KEY": "a2V5Mg==",
        }
        # a bad key is refused before anything is written
        code, out = await pachctl(
            emulator, "deploy", "storage", "microsoft", "pachstore1", "no key", "--namespace", NS
        )
        assert code != 0 and "account key must be" in out and "no key" not in out, out
        secret = await k.get("Secret", NS, "pachyderm-storage")
        assert (secret.get("stringData") or secret.get("data"))["PACH_AZURE_KEY"] == "a2V5Mg=="
