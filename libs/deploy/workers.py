"""The Kubernetes objects of one pipeline version's workers (pps's
Kubernetes runner, ``services/pps/runners/kubernetes.py``).

One ReplicationController per pipeline version (as Pachyderm 1.7), named
``pipeline-<name>-v<version>``; ``parallelism`` is its replica count. Its
pod (docs/decisions/0025-workers-in-user-images.md):

- an init container (this project's image) copies the datum driver, a
  POSIX shell script, into an ``emptyDir`` mounted at ``/pach-bin``;
- ``user``: ``transform.image`` running the driver, which runs the
  pipeline's command once per datum with ``/pfs`` laid out by
- ``worker``: this project's image running ``python -m
  services.pps.worker`` (NATS, PFS, the datum loop) with the workers' own
  NATS credential; the two talk through files in the shared ``/pach``.

Resource requests and limits (``gpu`` as ``nvidia.com/gpu``), the
scheduling spec and image pull secrets go on the pod; ``pod_spec`` (JSON)
is merged over the generated pod spec last. A service pipeline also gets a
Service with ``external_port`` as its NodePort."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from libs.api.pps import pps_pb2 as pps
from libs.errors import InvalidArgument

Obj = dict[str, Any]
PART_OF = {"app.kubernetes.io/part-of": "pachyderm", "component": "worker"}
GPU_RESOURCE = "nvidia.com/gpu"
DRIVER_DIR = "/pach-bin"
SHARED_DIR = "/pach"
DRIVER = f"{DRIVER_DIR}/datum-driver.sh"


@dataclass(frozen=True)
class WorkerOptions:
    namespace: str = "default"
    image: str = "pachyderm-es:latest"  # this project's image (init + worker)
    image_pull_secret: str = ""
    nats_secret: str = "pachyderm-nats"
    config_map: str = "pachyderm-config"
    storage_secret: str = "pachyderm-storage"
    service_account: str = "pachyderm"
    objects_host_path: str = ""  # the local object store's node directory, if any


def _dns(text: str) -> str:
    clean = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if clean != text or len(clean) > 40:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        clean = f"{clean[:40].strip('-')}-{digest}"
    return clean


def controller_name(pipeline: str, version: int) -> str:
    """``pipeline-<name>-v<version>``, made a DNS label (1.7's name)."""
    return f"pipeline-{_dns(pipeline)}-v{version}"


def pipeline_label(pipeline: str) -> str:
    return (
        pipeline
        if len(pipeline) <= 63 and re.match(r"^[A-Za-z0-9_.-]+$", pipeline)
        else _dns(pipeline)
    )


def selector(pipeline: str) -> str:
    return f"component=worker,pipeline-name={pipeline_label(pipeline)}"


def _quantities(spec: pps.ResourceSpec) -> dict[str, str]:
    out: dict[str, str] = {}
    if spec.cpu:
        out["cpu"] = f"{spec.cpu:g}"
    if spec.memory:
        out["memory"] = spec.memory
    if spec.gpu:
        out[GPU_RESOURCE] = str(spec.gpu)
    if spec.disk:
        out["ephemeral-storage"] = spec.disk
    return out


DEFAULT_UID = 65534  # nobody, as the local sandbox's default


def _user_security(user: str) -> Obj:
    """The user container's securityContext: no capability, no privilege
    escalation, the runtime's seccomp profile, and the uid (``uid`` or
    ``uid:gid`` of ``transform.user``; a user name cannot be resolved
    before the pod runs, so it, like no user, runs as uid 65534)."""
    uid, _, gid = user.partition(":")
    run_as = int(uid) if uid.isdigit() else DEFAULT_UID
    group = int(gid) if gid.isdigit() else run_as
    return {
        "runAsUser": run_as,
        "runAsGroup": group,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def merge(base: Any, over: Any) -> Any:
    """``over`` on top of ``base``: maps merge key by key, anything else
    (lists included) is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(base.get(key), value) if key in base else value
        return out
    return over


def worker_objects(
    pipeline: str, version: int, spec: pps.CreatePipelineRequest, opts: WorkerOptions, replicas: int
) -> list[Obj]:
    """The controller (and a service pipeline's Service) of one version."""
    name = controller_name(pipeline, version)
    labels = {**PART_OF, "app": name, "pipeline-name": pipeline_label(pipeline),
              "pipeline-version": str(version)}  # fmt: skip
    t = spec.transform
    env: list[Obj] = [{"name": k, "value": v} for k, v in sorted(t.env.items())]
    volumes: list[Obj] = [
        {"name": "pach-bin", "emptyDir": {}},
        {"name": "pach", "emptyDir": {}},
    ]
    user_mounts: list[Obj] = [
        {"name": "pach-bin", "mountPath": DRIVER_DIR, "readOnly": True},
        {"name": "pach", "mountPath": f"{SHARED_DIR}/run", "subPath": "run"},
        {"name": "pach", "mountPath": "/pfs", "subPath": "pfs"},
    ]
    # Each Secret is a volume: in the user container at its mount_path, and
    # in the worker container where its secret store reads it
    # (<data dir>/secrets/data/<name>/<key>), for the env values it passes.
    secret_volumes: dict[str, str] = {}
    worker_mounts: list[Obj] = [{"name": "pach", "mountPath": SHARED_DIR}]
    for secret in t.secrets:
        if secret.name not in secret_volumes:
            vol = secret_volumes[secret.name] = f"secret-{len(secret_volumes)}"
            volumes.append({"name": vol, "secret": {"secretName": secret.name}})
            worker_mounts.append(
                {
                    "name": vol,
                    "mountPath": f"{SHARED_DIR}/data/secrets/data/{secret.name}",
                    "readOnly": True,
                }
            )
        vol = secret_volumes[secret.name]
        if secret.mount_path:
            user_mounts.append({"name": vol, "mountPath": secret.mount_path, "readOnly": True})
        if secret.env_var:
            ref = {"name": secret.name, "key": secret.key}
            env.append({"name": secret.env_var, "valueFrom": {"secretKeyRef": ref}})
    resources: Obj = {}
    if spec.HasField("resource_requests"):
        resources["requests"] = _quantities(spec.resource_requests)
    if spec.HasField("resource_limits"):
        resources["limits"] = _quantities(spec.resource_limits)
    user: Obj = {
        "name": "user",
        "image": t.image or "ubuntu:22.04",
        "command": ["/bin/sh", DRIVER],
        "env": [*env, {"name": "PACH_DRIVER_DIR", "value": f"{SHARED_DIR}/run"}],
        "volumeMounts": user_mounts,
    }
    user["securityContext"] = _user_security(t.user)
    if resources:
        user["resources"] = resources
    if t.working_dir:
        user["workingDir"] = t.working_dir
    worker: Obj = {
        "name": "worker",
        "image": opts.image,
        "command": ["python", "-m", "services.pps.worker"],
        "env": [
            {"name": "PACH_PPS_PIPELINE", "value": pipeline},
            {
                "name": "PACH_PPS_WORKER_ID",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
            },
            {"name": "PACH_PPS_RUNNER", "value": "pod"},
            {"name": "PACH_DATA_DIR", "value": f"{SHARED_DIR}/data"},
            {"name": "PACH_NATS_USER", "value": "pps-worker"},
            {
                "name": "PACH_NATS_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": opts.nats_secret, "key": "pps-worker"}},
            },
        ],
        "envFrom": [
            {"configMapRef": {"name": opts.config_map}},
            {"secretRef": {"name": opts.storage_secret, "optional": True}},
        ],
        "volumeMounts": worker_mounts,
    }
    if opts.objects_host_path:
        volumes.append(
            {
                "name": "objects",
                "hostPath": {"path": opts.objects_host_path, "type": "DirectoryOrCreate"},
            }
        )
        worker["volumeMounts"].append({"name": "objects", "mountPath": "/var/pachyderm/objects"})
    init: Obj = {
        "name": "init",
        "image": opts.image,
        "command": [
            "python",
            "-m",
            "services.pps.runners.kubernetes",
            "install-driver",
            DRIVER_DIR,
        ],
        "volumeMounts": [{"name": "pach-bin", "mountPath": DRIVER_DIR}],
    }
    pod: Obj = {
        "serviceAccountName": opts.service_account,
        "automountServiceAccountToken": False,
        "initContainers": [init],
        "containers": [user, worker],
        "volumes": volumes,
    }
    pulls = [*t.image_pull_secrets, *([opts.image_pull_secret] if opts.image_pull_secret else [])]
    if pulls:
        pod["imagePullSecrets"] = [{"name": p} for p in dict.fromkeys(pulls)]
    if spec.HasField("scheduling_spec"):
        if spec.scheduling_spec.node_selector:
            pod["nodeSelector"] = dict(sorted(spec.scheduling_spec.node_selector.items()))
        if spec.scheduling_spec.priority_class_name:
            pod["priorityClassName"] = spec.scheduling_spec.priority_class_name
    if spec.pod_spec:
        try:
            extra = json.loads(spec.pod_spec)
        except ValueError:
            raise InvalidArgument(f"pipeline {pipeline}: pod_spec is not JSON") from None
        if not isinstance(extra, dict):
            raise InvalidArgument(f"pipeline {pipeline}: pod_spec must be a JSON object")
        pod = merge(pod, extra)
    meta = {"name": name, "namespace": opts.namespace, "labels": labels}
    rc: Obj = {
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"app": name},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
    out = [rc]
    if spec.HasField("service") and spec.service.internal_port:
        port: Obj = {"port": spec.service.internal_port, "targetPort": spec.service.internal_port}
        if spec.service.external_port:
            port["nodePort"] = spec.service.external_port
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": dict(meta),
                "spec": {
                    "type": "NodePort" if spec.service.external_port else "ClusterIP",
                    "selector": {"app": name},
                    "ports": [port],
                },
            }
        )
    return out


def scale_patch(replicas: int) -> Mapping[str, Any]:
    return {"spec": {"replicas": replicas}}
