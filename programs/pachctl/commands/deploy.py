"""``pachctl deploy local|amazon|google|microsoft|custom``, ``deploy
storage``, ``undeploy`` and ``port-forward`` (1.7's commands and arguments;
the flags that mean something here). The manifests come from
``libs.deploy.manifests``; without ``--dry-run`` they are applied through
the Kubernetes API (``deploy_apply``) and ``deploy`` waits until the
cluster is ready. docs/kubernetes.md."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Sequence
from typing import Any, TextIO

import yaml

from libs.azure_names import check_account, check_account_key
from libs.deploy import manifests as m
from libs.errors import InvalidArgument

# AKS's built-in StorageClass of Azure managed disks (its default too).
AZURE_STORAGE_CLASS = "managed-csi"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    deploy = sub.add_parser("deploy", help="Deploy a Pachyderm cluster on Kubernetes.")
    targets = deploy.add_subparsers(dest="target", metavar="<target>")

    def deploy_help(args: argparse.Namespace, out: TextIO) -> int:
        deploy.print_help(out)
        return 2

    deploy.set_defaults(run=deploy_help)

    p = targets.add_parser("local", help="Deploy a single-node Pachyderm cluster (kind, minikube).")
    p.add_argument(
        "--host-path",
        default="/var/pachyderm/objects",
        help="Node directory holding file contents (the local object store).",
    )
    _common(p)
    p.set_defaults(run=deploy_cmd)

    p = targets.add_parser("amazon", help="Deploy on AWS: S3 bucket, NATS volumes on EBS.")
    p.add_argument("bucket", help="S3 bucket")
    p.add_argument("region", help="AWS region, e.g. us-west-1")
    p.add_argument("disk_size", help="size of each NATS node's volume in GB")
    p.add_argument(
        "--credentials",
        default="",
        help='"<id>,<secret>": access key for the bucket (else the nodes\' IAM role)',
    )
    p.add_argument(
        "--iam-role", default="", help="accepted for 1.7 compatibility; use the nodes' role"
    )
    _common(p)
    p.set_defaults(run=deploy_cmd)

    p = targets.add_parser("google", help="Deploy on GCP: GCS bucket (S3-compatible XML API).")
    p.add_argument("bucket", help="GCS bucket")
    p.add_argument("disk_size", help="size of each NATS node's volume in GB")
    p.add_argument(
        "credentials_file",
        nargs="?",
        default="",
        help="(1.7's service-account file: not used; give HMAC keys with --credentials)",
    )
    p.add_argument("--credentials", default="", help='"<hmac-id>,<hmac-secret>" for the bucket')
    _common(p)
    p.set_defaults(run=deploy_cmd)

    p = targets.add_parser(
        "microsoft",
        help="Deploy on Azure (AKS): Blob Storage container, NATS volumes on Azure disks.",
        description=(
            "Deploy on Azure: file contents in a Blob Storage container "
            "(PACH_OBJECT_BACKEND=azure; the container must exist), the account name and "
            "key in the pachyderm-storage Secret, NATS volumes on Azure managed disks "
            "(StorageClass managed-csi unless --etcd-storage-class says otherwise)."
        ),
    )
    p.add_argument("container", help="Blob Storage container (create it first)")
    p.add_argument("account_name", help="storage account name")
    p.add_argument("account_key", help="storage account key (base64, as the portal shows it)")
    p.add_argument("disk_size", help="size of each NATS node's volume in GB")
    p.add_argument(
        "--endpoint",
        default="",
        help="blob service URL for a sovereign cloud "
        "(default https://<account>.blob.core.windows.net)",
    )
    _common(p)
    p.set_defaults(run=deploy_cmd)

    p = targets.add_parser("custom", help="Deploy with any S3-compatible object store (MinIO ...).")
    p.add_argument(
        "--persistent-disk",
        default="aws",
        choices=("aws", "google", "azure"),
        help="the cloud whose dynamically provisioned volumes NATS uses",
    )
    p.add_argument(
        "--object-store", default="s3", choices=("s3",), help="the object store API (S3 only)"
    )
    p.add_argument("--region", default="us-east-1", help="the S3 region")
    p.add_argument("--secure", action="store_true", help="the endpoint speaks HTTPS")
    p.add_argument("--isS3V2", dest="s3v2", action="store_true", help="accepted, ignored (V4 only)")
    p.add_argument(
        "args", nargs="*", help="<volume> <size-GB> <bucket> <id> <secret> <endpoint> (1.7's order)"
    )
    _common(p)
    p.set_defaults(run=deploy_cmd)

    p = targets.add_parser("storage", help="Create or update the object store credentials Secret.")
    p.add_argument("backend", choices=("amazon", "google", "microsoft", "custom"))
    p.add_argument(
        "args",
        nargs="*",
        help="amazon: <region> <id> <secret>; google/custom: <id> <secret>; "
        "microsoft: <account-name> <account-key>",
    )
    _k8s_flags(p)
    p.set_defaults(run=deploy_storage_cmd)

    p = sub.add_parser("undeploy", help="Tear down a deployed Pachyderm cluster.")
    p.add_argument(
        "-a",
        "--all",
        action="store_true",
        help="also remove the volumes (the event log!) and the NATS Secrets",
    )
    _k8s_flags(p)
    p.set_defaults(run=undeploy_cmd)

    p = sub.add_parser("port-forward", help="Forward the gateway's ports to localhost.")
    p.add_argument("-p", "--port", type=int, default=30650, help="local port for gRPC")
    p.add_argument("--http-port", type=int, default=30080, help="local port for HTTP/dashboard")
    _k8s_flags(p)
    p.set_defaults(run=port_forward_cmd)


def _k8s_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--namespace", default="default", help="Kubernetes namespace")
    p.add_argument("--kubeconfig", default="", help="kube config file (default $KUBECONFIG)")
    p.add_argument("--context", default="", help="kube config context")


def _common(p: argparse.ArgumentParser) -> None:
    _k8s_flags(p)
    p.add_argument(
        "--dry-run", action="store_true", help="print the manifests instead of applying them"
    )
    p.add_argument(
        "-o",
        "--output",
        default="json",
        choices=("json", "yaml"),
        help="output format of --dry-run",
    )
    p.add_argument(
        "--no-dashboard", action="store_true", help="do not expose HTTP (dashboard) on a NodePort"
    )
    p.add_argument("--registry", default="", help="the registry to pull images from")
    p.add_argument("--image", default="pachyderm-es", help="the image every service runs")
    p.add_argument("--tag", default="latest", help="the image's tag")
    p.add_argument("--image-pull-secret", default="", help="Secret for a private registry")
    p.add_argument("--no-rbac", action="store_true", help="no Role/RoleBinding")
    p.add_argument(
        "--local-roles", action="store_true", help="namespace-local Role instead of a ClusterRole"
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--nats-nodes", type=int, default=0, help="NATS JetStream nodes (default 3)")
    p.add_argument(
        "--dynamic-etcd-nodes",
        type=int,
        default=0,
        help="1.7's name for the number of event-store (NATS) nodes",
    )
    p.add_argument(
        "--etcd-storage-class",
        "--nats-storage-class",
        dest="storage_class",
        default="",
        help="StorageClass of the NATS volumes",
    )
    p.add_argument("--etcd-cpu-request", "--nats-cpu-request", dest="nats_cpu", default="250m")
    p.add_argument(
        "--etcd-memory-request", "--nats-memory-request", dest="nats_memory", default="512Mi"
    )
    p.add_argument("--pachd-cpu-request", default="100m", help="CPU request of each service")
    p.add_argument("--pachd-memory-request", default="128Mi", help="memory request of each service")
    p.add_argument(
        "--request",
        action="append",
        default=[],
        metavar="SERVICE=CPU,MEMORY",
        help="one service's requests, e.g. pfs=500m,1Gi (repeatable)",
    )
    p.add_argument(
        "--replicas",
        action="append",
        default=[],
        metavar="SERVICE=N",
        help="one service's replica count, e.g. gateway=3 (repeatable)",
    )
    p.add_argument(
        "--mongodb-uri",
        default=os.environ.get("MONGODB_URI", ""),
        help="read models in MongoDB (default $MONGODB_URI; else per-pod sqlite)",
    )
    p.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the cluster to be ready"
    )


def _pairs(values: Sequence[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or key not in m.SERVICES:
            raise InvalidArgument(
                f"--{what} {value!r}: want <service>=..., service one of {', '.join(m.SERVICES)}"
            )
        out[key] = rest
    return out


def _creds(value: str, flag: str = "--credentials") -> dict[str, str]:
    if not value:
        return {}
    parts = value.split(",")
    if len(parts) == 3:
        raise InvalidArgument(f"{flag}: session tokens are not supported (use a long-lived key)")
    if len(parts) != 2 or not all(parts):
        raise InvalidArgument(f'{flag} must be "<id>,<secret>"')
    return {"PACH_S3_ACCESS_KEY": parts[0], "PACH_S3_SECRET_KEY": parts[1]}


def _azure_creds(account: str, key: str) -> dict[str, str]:
    return {"PACH_AZURE_ACCOUNT": check_account(account), "PACH_AZURE_KEY": check_account_key(key)}


def _disk(value: str) -> str:
    if not value.isdigit() or int(value) < 1:
        raise InvalidArgument(f"disk size {value!r} must be a whole number of GB")
    return f"{int(value)}Gi"


def options(args: argparse.Namespace) -> tuple[m.DeployOptions, dict[str, str]]:
    """The deploy options and the object store credentials of a command line."""
    target: str = args.target
    storage: dict[str, str] = {}
    disk = "10Gi"
    if target == "local":
        store = m.ObjectStore(host_path=args.host_path)
    elif target == "amazon":
        disk = _disk(args.disk_size)
        store = m.ObjectStore(
            backend="s3",
            bucket=args.bucket,
            region=args.region,
            endpoint=f"https://s3.{args.region}.amazonaws.com",
        )
        storage = _creds(args.credentials)
    elif target == "google":
        if args.credentials_file:
            raise InvalidArgument(
                "the cluster reaches GCS through its S3-compatible XML API: give the "
                "bucket's HMAC keys with --credentials <id>,<secret> instead of a key file"
            )
        disk = _disk(args.disk_size)
        store = m.ObjectStore(
            backend="s3",
            bucket=args.bucket,
            region="auto",
            endpoint="https://storage.googleapis.com",
        )
        storage = _creds(args.credentials)
    elif target == "microsoft":
        disk = _disk(args.disk_size)
        store = m.ObjectStore(backend="azure", bucket=args.container, endpoint=args.endpoint)
        storage = _azure_creds(args.account_name, args.account_key)
        if not args.storage_class:
            args.storage_class = AZURE_STORAGE_CLASS
    else:  # custom
        if len(args.args) != 6:
            raise InvalidArgument(
                "deploy custom takes <volume> <size-GB> <bucket> <id> <secret> <endpoint>"
            )
        _volume, size, bucket, key_id, secret, endpoint = args.args
        disk = _disk(size)
        if "://" not in endpoint:
            endpoint = ("https://" if args.secure else "http://") + endpoint
        store = m.ObjectStore(backend="s3", bucket=bucket, region=args.region, endpoint=endpoint)
        storage = _creds(f"{key_id},{secret}", "<id> <secret>")
    requests = {
        s: m.Resources(args.pachd_cpu_request, args.pachd_memory_request) for s in m.SERVICES
    }
    for service, value in _pairs(args.request, "request").items():
        cpu, sep, memory = value.partition(",")
        if not sep:
            raise InvalidArgument(f"--request {service}={value!r}: want <cpu>,<memory>")
        requests[service] = m.Resources(cpu, memory)
    replicas: dict[str, int] = {}
    for service, value in _pairs(args.replicas, "replicas").items():
        if not value.isdigit():
            raise InvalidArgument(f"--replicas {service}={value!r}: want a number")
        replicas[service] = int(value)
    opts = m.DeployOptions(
        target=target,
        namespace=args.namespace,
        registry=args.registry,
        image=args.image,
        tag=args.tag,
        image_pull_secret=args.image_pull_secret,
        rbac=not args.no_rbac,
        local_roles=args.local_roles,
        dashboard=not args.no_dashboard,
        log_level=args.log_level,
        nats_nodes=args.nats_nodes or args.dynamic_etcd_nodes or 3,
        nats_volume_size=disk,
        nats_storage_class=args.storage_class,
        nats_resources=m.Resources(args.nats_cpu, args.nats_memory),
        resources=requests,
        replicas=replicas,
        object_store=store,
        mongodb_uri=args.mongodb_uri,
    )
    m.validate(opts)
    return opts, storage


def render(objs: Sequence[dict[str, Any]], output: str) -> str:
    if output == "yaml":
        return yaml.safe_dump_all(objs, sort_keys=False, default_flow_style=False)
    return "".join(json.dumps(o, indent=2) + "\n" for o in objs)


def deploy_cmd(args: argparse.Namespace, out: TextIO) -> int:
    opts, storage = options(args)
    objs = m.cluster(opts, storage=storage)
    if args.dry_run:
        out.write(render(objs, args.output))
        return 0
    from programs.pachctl.commands import deploy_apply

    asyncio.run(deploy_apply.deploy(args, opts, objs, out))
    return 0


def storage_values(backend: str, values: Sequence[str]) -> dict[str, str]:
    if backend == "amazon":
        if len(values) != 3:
            raise InvalidArgument("deploy storage amazon takes <region> <id> <secret>")
        return {**_creds(",".join(values[1:]), "<id> <secret>"), "PACH_S3_REGION": values[0]}
    if backend == "microsoft":
        if len(values) != 2:
            raise InvalidArgument("deploy storage microsoft takes <account-name> <account-key>")
        return _azure_creds(*values)
    if len(values) != 2:
        raise InvalidArgument(f"deploy storage {backend} takes <id> <secret>")
    return _creds(",".join(values), "<id> <secret>")


def deploy_storage_cmd(args: argparse.Namespace, out: TextIO) -> int:
    values = storage_values(args.backend, args.args)
    from programs.pachctl.commands import deploy_apply

    asyncio.run(deploy_apply.storage(args, values, out))
    return 0


def undeploy_cmd(args: argparse.Namespace, out: TextIO) -> int:
    from programs.pachctl.commands import deploy_apply

    asyncio.run(deploy_apply.undeploy(args, out))
    return 0


def port_forward_cmd(args: argparse.Namespace, out: TextIO) -> int:
    from programs.pachctl.commands import deploy_apply

    asyncio.run(deploy_apply.port_forward(args, out))
    return 0
