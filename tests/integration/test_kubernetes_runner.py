"""pps's Kubernetes runner over a pipeline's whole life, against a
Kubernetes API emulator process (tests/support/kube_emulator.py) through the
real kubernetes-asyncio client over HTTP: create (a ReplicationController
per version, parallelism as replicas, the pod as the spec says), scale,
update (the next version's controller, the old one deleted), standby and
stop (scaled to 0 and back), delete (everything removed). And the datum
driver that runs user code in the user's image, run as a real /bin/sh
process against PodRunner."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from libs.api.pps import pps_pb2 as pps
from libs.deploy import kube
from libs.deploy.workers import WorkerOptions, worker_objects
from services.pps.runners.kubernetes import DRIVER_SOURCE, KubernetesWorkerPool, PodRunner
from tests.support import kube_emulator

NS = "pach"


def spec(image: str = "alpine:3.20", parallelism: int = 2) -> pps.CreatePipelineRequest:
    s = pps.CreatePipelineRequest()
    s.pipeline.name = "edges"
    s.transform.image = image
    s.transform.cmd.extend(["sh", "-c", "cp /pfs/images/* /pfs/out/"])
    s.transform.env["MODE"] = "fast"
    s.transform.image_pull_secrets.append("regcred")
    sec = s.transform.secrets.add()
    sec.name, sec.mount_path = "creds", "/secrets/creds"
    sec = s.transform.secrets.add()
    sec.name, sec.env_var, sec.key = "token", "API_TOKEN", "value"
    s.parallelism_spec.constant = parallelism
    s.resource_requests.cpu = 0.5
    s.resource_requests.memory = "256Mi"
    s.resource_limits.gpu = 1
    s.scheduling_spec.node_selector["pool"] = "gpu"
    s.scheduling_spec.priority_class_name = "high"
    s.pod_spec = json.dumps({"tolerations": [{"key": "gpu", "operator": "Exists"}]})
    return s


@pytest.fixture
def emulator(tmp_path: Path):
    with kube_emulator.start(tmp_path) as (_port, config):
        yield config


class Specs:
    """What pps's pipeline read model says (the runner's only input)."""

    def __init__(self) -> None:
        self.current: tuple[int, pps.CreatePipelineRequest] | None = None

    async def __call__(self, name: str) -> tuple[int, pps.CreatePipelineRequest] | None:
        assert name == "edges"
        return self.current


async def rc(k: kube.Kube, name: str) -> dict[str, Any] | None:
    return await k.get("ReplicationController", NS, name)


async def test_a_pipelines_workers_over_its_life(emulator: Path) -> None:
    api = await kube.connect(str(emulator))
    async with api:
        k = kube.Kube(api)
        specs = Specs()
        opts = WorkerOptions(namespace=NS, image="reg.example/pachyderm-es:1.0")
        pool = KubernetesWorkerPool("edges", k, specs, opts)

        # create: version 1 with parallelism 2
        specs.current = (1, spec())
        await pool.scale(2)
        got = await rc(k, "pipeline-edges-v1")
        assert got is not None and got["spec"]["replicas"] == 2 and pool.size == 2
        pod = got["spec"]["template"]["spec"]
        user, worker = pod["containers"]
        assert user["image"] == "alpine:3.20"
        assert user["command"] == ["/bin/sh", "/pach-bin/datum-driver.sh"]
        assert user["resources"] == {
            "requests": {"cpu": "0.5", "memory": "256Mi"},
            "limits": {"nvidia.com/gpu": "1"},
        }
        # user code: no capability, no escalation, never root unless asked
        assert user["securityContext"] == {
            "runAsUser": 65534,
            "runAsGroup": 65534,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert {"name": "MODE", "value": "fast"} in user["env"]
        ref = {"secretKeyRef": {"name": "token", "key": "value"}}
        assert {"name": "API_TOKEN", "valueFrom": ref} in user["env"]
        assert {"name": "secret-0", "mountPath": "/secrets/creds", "readOnly": True} in user[
            "volumeMounts"
        ]
        assert worker["image"] == "reg.example/pachyderm-es:1.0"
        # the worker reads both Secrets where its secret store looks
        assert {m["mountPath"] for m in worker["volumeMounts"]} >= {
            "/pach/data/secrets/data/creds",
            "/pach/data/secrets/data/token",
        }
        # the user's container sees only the driver's directory of /pach
        assert {m["mountPath"] for m in user["volumeMounts"]} == {
            "/pach-bin",
            "/pach/run",
            "/pfs",
            "/secrets/creds",
        }
        env = {e["name"]: e for e in worker["env"]}
        assert env["PACH_NATS_USER"]["value"] == "pps-worker"
        assert env["PACH_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "pps-worker"
        assert pod["initContainers"][0]["image"] == "reg.example/pachyderm-es:1.0"
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["nodeSelector"] == {"pool": "gpu"}
        assert pod["priorityClassName"] == "high"
        assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]  # pod_spec merged
        assert pod["automountServiceAccountToken"] is False
        # transform.user "uid:gid" is honoured; a name cannot be resolved yet
        for asked, uid, gid in (
            ("1000:50", 1000, 50),
            ("2000", 2000, 2000),
            ("alice", 65534, 65534),
        ):
            s = spec()
            s.transform.user = asked
            (controller,) = worker_objects("edges", 9, s, opts, 1)
            got_ctx = controller["spec"]["template"]["spec"]["containers"][0]["securityContext"]
            assert (got_ctx["runAsUser"], got_ctx["runAsGroup"]) == (uid, gid)

        # scale: parallelism 3 patches the controller
        await pool.scale(3)
        assert (await rc(k, "pipeline-edges-v1"))["spec"]["replicas"] == 3  # type: ignore[index]

        # update: version 2 (new image) replaces version 1's controller
        specs.current = (2, spec(image="alpine:3.21"))
        await pool.scale(2)
        assert await rc(k, "pipeline-edges-v1") is None
        v2 = await rc(k, "pipeline-edges-v2")
        assert v2 is not None and v2["spec"]["replicas"] == 2
        assert v2["spec"]["template"]["spec"]["containers"][0]["image"] == "alpine:3.21"

        # standby / stop: scaled to 0 and back
        await pool.stop()
        assert (await rc(k, "pipeline-edges-v2"))["spec"]["replicas"] == 0  # type: ignore[index]
        assert pool.size == 0
        await pool.scale(2)
        assert (await rc(k, "pipeline-edges-v2"))["spec"]["replicas"] == 2  # type: ignore[index]
        await pool.stop()
        assert (await rc(k, "pipeline-edges-v2"))["spec"]["replicas"] == 0  # type: ignore[index]

        # delete: the pipeline is gone, so are its controllers
        specs.current = None
        await pool.stop()
        assert await rc(k, "pipeline-edges-v2") is None
        assert await k.list("ReplicationController", NS, "component=worker") == []


async def test_a_service_pipeline_gets_a_node_port(emulator: Path) -> None:
    api = await kube.connect(str(emulator))
    async with api:
        k = kube.Kube(api)
        specs = Specs()
        s = spec()
        s.ClearField("parallelism_spec")
        s.service.internal_port, s.service.external_port = 8888, 30888
        specs.current = (1, s)
        pool = KubernetesWorkerPool("edges", k, specs, WorkerOptions(namespace=NS))
        await pool.scale(1)
        svc = await k.get("Service", NS, "pipeline-edges-v1")
        assert svc is not None
        assert svc["spec"]["type"] == "NodePort"
        assert svc["spec"]["ports"] == [{"port": 8888, "targetPort": 8888, "nodePort": 30888}]
        assert svc["spec"]["selector"] == {"app": "pipeline-edges-v1"}
        specs.current = None
        await pool.stop()
        assert await k.get("Service", NS, "pipeline-edges-v1") is None


async def test_a_bad_pod_spec_is_the_pools_failure_and_creates_nothing(emulator: Path) -> None:
    api = await kube.connect(str(emulator))
    async with api:
        k = kube.Kube(api)
        specs = Specs()
        s = spec()
        s.pod_spec = "[not json"
        specs.current = (1, s)
        pool = KubernetesWorkerPool("edges", k, specs, WorkerOptions(namespace=NS))
        await pool.scale(2)
        assert "pod_spec is not JSON" in pool.failure
        assert await rc(k, "pipeline-edges-v1") is None


@pytest.fixture
def driver(tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        ["/bin/sh", str(DRIVER_SOURCE)],
        env={"PACH_DRIVER_DIR": str(run_dir), "PATH": "/usr/bin:/bin"},
    )
    yield run_dir
    proc.kill()
    proc.wait()


async def test_the_datum_driver_runs_each_datum_in_the_users_container(
    driver: Path, tmp_path: Path
) -> None:
    pfs_root = tmp_path / "user-pfs"  # the user container's /pfs
    runner = PodRunner(driver, pfs_root)
    lines: list[str] = []

    async def sink(line: str) -> None:
        lines.append(line)

    for n in range(2):  # two datums in a row through the same driver
        pfs_dir = tmp_path / f"datum-{n}"
        (pfs_dir / "in").mkdir(parents=True)
        (pfs_dir / "out").mkdir()
        (pfs_dir / "in" / "x").write_text(f"datum {n}\n")
        result = await runner.run(
            ["sh", "-c", 'cat in/x > out/y; read l; echo "$l $GREETING"; exit 3'],
            pfs_dir=pfs_dir,
            stdin=b"from stdin\n",
            env={"GREETING": "hi there"},
            working_dir=str(pfs_root),
            timeout=20,
            on_line=sink,
        )
        assert (result.returncode, result.timed_out) == (3, False)
        assert (pfs_dir / "out" / "y").read_text() == f"datum {n}\n"  # moved back
        assert list(pfs_root.iterdir()) == []
    assert lines == ["from stdin hi there", "from stdin hi there"]

    pfs_dir = tmp_path / "slow"
    pfs_dir.mkdir()
    result = await asyncio.wait_for(
        runner.run(
            ["sleep", "30"],
            pfs_dir=pfs_dir,
            stdin=b"",
            env={},
            working_dir="/",
            timeout=0.5,
            on_line=sink,
        ),
        15,
    )
    assert result.timed_out and result.returncode != 0 and result.seconds < 10


async def test_the_pod_runner_refuses_a_newline_in_an_argument(
    driver: Path, tmp_path: Path
) -> None:
    from libs.errors import InvalidArgument

    runner = PodRunner(driver, tmp_path / "pfs")

    async def sink(line: str) -> None:
        pass

    with pytest.raises(InvalidArgument):
        await runner.run(
            ["echo", "a\nb"],
            pfs_dir=tmp_path,
            stdin=b"",
            env={},
            working_dir="",
            timeout=None,
            on_line=sink,
        )
    assert not (driver / "req-0").exists()


async def test_pods_that_cannot_run_are_the_pools_failure_and_a_lost_controller_returns(
    emulator: Path,
) -> None:
    api = await kube.connect(str(emulator))
    async with api:
        k = kube.Kube(api)
        specs = Specs()
        specs.current = (1, spec())
        pool = KubernetesWorkerPool("edges", k, specs, WorkerOptions(namespace=NS), recheck_s=0)
        await pool.scale(2)
        assert pool.failure == ""
        # the kubelet's report on one of its pods: the image cannot be pulled
        await k.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "pipeline-edges-v1-x7k2p",
                    "namespace": NS,
                    "labels": {"app": "pipeline-edges-v1"},
                },
                "status": {
                    "containerStatuses": [
                        {
                            "name": "user",
                            "state": {
                                "waiting": {
                                    "reason": "ImagePullBackOff",
                                    "message": 'Back-off pulling image "alpine:3.20"',
                                }
                            },
                        }
                    ]
                },
            }
        )
        await pool.scale(2)
        assert "ImagePullBackOff" in pool.failure and "container user" in pool.failure
        await k.delete("Pod", NS, "pipeline-edges-v1-x7k2p")
        await pool.scale(2)
        assert pool.failure == ""

        # someone deletes the controller: the next look makes it again
        assert await k.delete("ReplicationController", NS, "pipeline-edges-v1")
        await pool.scale(2)
        got = await rc(k, "pipeline-edges-v1")
        assert got is not None and got["spec"]["replicas"] == 2


async def test_removal_survives_the_master_being_cancelled(emulator: Path) -> None:
    """pps cancels a deleted pipeline's master while it removes the workers:
    they are removed anyway."""
    api = await kube.connect(str(emulator))
    async with api:
        k = kube.Kube(api)
        specs = Specs()
        specs.current = (1, spec())
        pool = KubernetesWorkerPool("edges", k, specs, WorkerOptions(namespace=NS))
        await pool.scale(2)
        specs.current = None
        stopping = asyncio.create_task(pool.stop())
        await asyncio.sleep(0)  # let it start
        stopping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopping
        for _ in range(100):
            if await rc(k, "pipeline-edges-v1") is None:
                break
            await asyncio.sleep(0.1)
        assert await rc(k, "pipeline-edges-v1") is None
