"""The parts of ``pachctl deploy`` that talk to a Kubernetes API server
(through kubernetes-asyncio): apply the manifests and wait until the
cluster is ready, create the NATS credential Secrets unless they exist,
``deploy storage``, ``undeploy`` and ``port-forward``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import time
from collections.abc import Sequence
from typing import Any, TextIO

from libs.deploy import kube
from libs.deploy import manifests as m
from libs.errors import DeadlineExceeded, FailedPrecondition, NotFound
from programs.cluster import credentials

Obj = dict[str, Any]
POLL_S = 1.0
# What undeploy removes, in this order (a namespace is left: it may hold more).
_OWNED = (
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "Deployment",
    "ReplicationController",
    "StatefulSet",
    "Service",
    "ConfigMap",
    "RoleBinding",
    "Role",
    "ServiceAccount",
)


async def nats_secrets(k: kube.Kube, opts: m.DeployOptions) -> list[str]:
    """Create the two NATS Secrets with fresh credentials unless both exist
    (never replace existing ones: running pods hold those passwords)."""
    ns = opts.namespace
    have = [await k.get("Secret", ns, name) for name in (m.NATS_SECRET, m.NATS_SERVER_SECRET)]
    if all(have):
        return []
    if any(have):
        missing = m.NATS_SERVER_SECRET if have[0] is not None else m.NATS_SECRET
        raise FailedPrecondition(
            f"Secret {missing} is missing but the other NATS Secret exists: "
            "delete both to have new credentials made"
        )
    fresh = {r: credentials.Credential(r, secrets.token_urlsafe(32)) for r in credentials.ROLES}
    usable = {r: c for r, c in fresh.items() if r != credentials.OPERATOR}
    auth = credentials.authorization_block(usable)
    objs = m.nats_secrets(opts, {r: c.password for r, c in usable.items()}, auth)
    made: list[str] = []
    for obj in objs:
        await k.apply(obj)
        made.append(obj["metadata"]["name"])
    return made


def ready(obj: Obj) -> bool:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    want = int(spec.get("replicas", 1))
    return int(status.get("readyReplicas") or 0) >= want


async def wait_ready(k: kube.Kube, objs: Sequence[Obj], timeout: float, out: TextIO) -> None:
    """Until every Deployment and StatefulSet has its replicas ready."""
    waiting = [
        (o["kind"], o["metadata"]["namespace"], o["metadata"]["name"])
        for o in objs
        if o["kind"] in ("Deployment", "StatefulSet")
    ]
    deadline = time.monotonic() + timeout
    while waiting:
        still = []
        for kind, ns, name in waiting:
            got = await k.get(kind, ns, name)
            if got is None or not ready(got):
                still.append((kind, ns, name))
            else:
                out.write(f"{kind.lower()}/{name} ready\n")
        waiting = still
        if not waiting:
            break
        if time.monotonic() > deadline:
            names = ", ".join(f"{kind.lower()}/{name}" for kind, _, name in waiting)
            raise DeadlineExceeded(f"not ready after {timeout:g}s: {names}")
        await asyncio.sleep(POLL_S)


async def deploy(
    args: argparse.Namespace, opts: m.DeployOptions, objs: list[Obj], out: TextIO
) -> None:
    api = await kube.connect(args.kubeconfig, args.context)
    async with api:
        k = kube.Kube(api)
        if objs and objs[0]["kind"] == "Namespace":
            out.write(f"namespace/{opts.namespace} {await k.apply(objs[0])}\n")
            objs = objs[1:]
        for name in await nats_secrets(k, opts):
            out.write(f"secret/{name} created\n")
        for obj in objs:
            verb = await k.apply(obj)
            out.write(f"{obj['kind'].lower()}/{obj['metadata']['name']} {verb}\n")
        out.flush()
        await wait_ready(k, objs, args.timeout, out)
    out.write(
        "Pachyderm is ready. Reach it on the nodes' port 30650 (gRPC) or run "
        '"pachctl port-forward".\n'
    )


async def storage(args: argparse.Namespace, values: dict[str, str], out: TextIO) -> None:
    opts = m.DeployOptions(namespace=args.namespace)
    m.validate(opts)
    api = await kube.connect(args.kubeconfig, args.context)
    async with api:
        verb = await kube.Kube(api).apply(m.storage_secret(opts, values))
    out.write(f"secret/{m.STORAGE_SECRET} {verb}\n")


async def undeploy(args: argparse.Namespace, out: TextIO) -> None:
    opts = m.DeployOptions(namespace=args.namespace)
    m.validate(opts)
    ns = opts.namespace
    selector = "app.kubernetes.io/part-of=pachyderm"
    api = await kube.connect(args.kubeconfig, args.context)
    async with api:
        k = kube.Kube(api)
        for kind in _OWNED:
            for obj in await k.list(kind, ns, selector):
                name = obj["metadata"]["name"]
                if await k.delete(kind, ns, name):
                    out.write(f"{kind.lower()}/{name} deleted\n")
        for kind in ("ClusterRoleBinding", "ClusterRole"):
            if await k.delete(kind, "", m.SERVICE_ACCOUNT):
                out.write(f"{kind.lower()}/{m.SERVICE_ACCOUNT} deleted\n")
        if args.all:
            for claim in await k.list("PersistentVolumeClaim", ns, "app=nats"):
                name = claim["metadata"]["name"]
                if await k.delete("PersistentVolumeClaim", ns, name):
                    out.write(f"persistentvolumeclaim/{name} deleted\n")
            for name in (m.NATS_SECRET, m.NATS_SERVER_SECRET, m.STORAGE_SECRET):
                if await k.delete("Secret", ns, name):
                    out.write(f"secret/{name} deleted\n")


async def gateway_pod(k: kube.Kube, namespace: str) -> str:
    for pod in await k.list("Pod", namespace, "app=gateway"):
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Running" and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            return str(pod["metadata"]["name"])
    raise NotFound(f"no running gateway pod in namespace {namespace}")


async def port_forward(args: argparse.Namespace, out: TextIO) -> None:
    """Forward localhost's ports to a gateway pod's 30650 and 30080 through
    the API server's pod port-forward (a WebSocket per connection)."""
    from programs.pachctl.commands import deploy_forward

    api = await kube.connect(args.kubeconfig, args.context)
    async with api:
        pod = await gateway_pod(kube.Kube(api), args.namespace)
        servers = []
        for local, remote in ((args.port, m.GRPC_PORT), (args.http_port, m.HTTP_PORT)):
            servers.append(await deploy_forward.listen(api, args.namespace, pod, local, remote))
            out.write(f"Forwarding from 127.0.0.1:{local} -> {pod}:{remote}\n")
        out.flush()
        try:
            await asyncio.Event().wait()
        finally:
            for server in servers:
                server.close()
                with contextlib.suppress(Exception):
                    await server.wait_closed()
