"""The objects ``pachctl deploy <target>`` creates, as plain dicts.

One image runs every service (``SERVICE`` picks which). Every service is its
own Deployment with its own replica count; gateway, pfs and pps are
stateless and get a HorizontalPodAutoscaler; every Deployment and NATS get a
PodDisruptionBudget. NATS JetStream runs as a StatefulSet with a volume per
node. The NATS credentials are never in this output: ``pachctl deploy``
creates the two Secrets when they are missing (``nats_secrets``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from libs.azure_names import check_container
from libs.errors import InvalidArgument

Obj = dict[str, Any]

PART_OF = {"app.kubernetes.io/part-of": "pachyderm"}
SERVICES = ("pfs", "pps", "auth", "enterprise", "admin", "gateway")
STATELESS = ("gateway", "pfs", "pps")  # the ones with an autoscaler
TARGETS = ("local", "amazon", "google", "microsoft", "custom")
CONFIG_MAP = "pachyderm-config"
STORAGE_SECRET = "pachyderm-storage"
NATS_SECRET = "pachyderm-nats"
NATS_SERVER_SECRET = "pachyderm-nats-server"
SERVICE_ACCOUNT = "pachyderm"
GRPC_PORT = 30650
HTTP_PORT = 30080
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")


@dataclass(frozen=True)
class Resources:
    cpu: str = "100m"
    memory: str = "128Mi"


@dataclass(frozen=True)
class ObjectStore:
    """Where the cluster keeps file contents: ``local`` (a hostPath on the
    node: one-node clusters only), any S3 endpoint, or an Azure Blob Storage
    container (``azure``: ``bucket`` is the container; the account and its
    key are in the storage Secret; ``endpoint`` only for a sovereign cloud)."""

    backend: str = "local"
    bucket: str = ""
    endpoint: str = ""
    region: str = "us-east-1"
    prefix: str = ""
    host_path: str = "/var/pachyderm/objects"


@dataclass(frozen=True)
class DeployOptions:
    target: str = "local"
    namespace: str = "default"
    registry: str = ""
    image: str = "pachyderm-es"
    tag: str = "latest"
    image_pull_secret: str = ""
    rbac: bool = True
    local_roles: bool = False
    dashboard: bool = True
    log_level: str = "info"
    nats_nodes: int = 3
    nats_image: str = "nats:2.10-alpine"
    nats_volume_size: str = "10Gi"
    nats_storage_class: str = ""
    nats_resources: Resources = field(default_factory=lambda: Resources("250m", "512Mi"))
    resources: Mapping[str, Resources] = field(default_factory=dict)
    replicas: Mapping[str, int] = field(default_factory=dict)
    max_replicas: int = 5
    object_store: ObjectStore = field(default_factory=ObjectStore)
    mongodb_uri: str = ""
    worker_runner: str = "kubernetes"

    @property
    def full_image(self) -> str:
        repo = f"{self.registry.rstrip('/')}/{self.image}" if self.registry else self.image
        return f"{repo}:{self.tag}"

    def replicas_of(self, service: str) -> int:
        return self.replicas.get(service, 2 if service == "gateway" else 1)

    def resources_of(self, service: str) -> Resources:
        return self.resources.get(service, Resources())


def validate(opts: DeployOptions) -> None:
    """Refuse options that would make manifests Kubernetes rejects, naming
    the bad one."""
    if opts.target not in TARGETS:
        raise InvalidArgument(f"deploy target must be one of {', '.join(TARGETS)}")
    if not _DNS_LABEL.match(opts.namespace):
        raise InvalidArgument(f"--namespace {opts.namespace!r} is not a DNS label")
    if opts.image_pull_secret and not _DNS_LABEL.match(opts.image_pull_secret):
        raise InvalidArgument(f"--image-pull-secret {opts.image_pull_secret!r} is not a name")
    if not 1 <= opts.nats_nodes <= 9:
        raise InvalidArgument(f"the number of NATS nodes must be 1..9, got {opts.nats_nodes}")
    for name, res in [("nats", opts.nats_resources), *opts.resources.items()]:
        for what, value in (("cpu", res.cpu), ("memory", res.memory)):
            if not _QUANTITY.match(value):
                raise InvalidArgument(f"{name} {what} request {value!r} is not a quantity")
    if not _QUANTITY.match(opts.nats_volume_size):
        raise InvalidArgument(f"disk size {opts.nats_volume_size!r} is not a quantity")
    for service, n in opts.replicas.items():
        if service not in SERVICES or not 0 <= n <= 100:
            raise InvalidArgument(f"bad replica count {service}={n}")
    if opts.object_store.backend not in ("local", "s3", "azure"):
        raise InvalidArgument("the object store backend must be local, s3 or azure")
    if opts.object_store.backend == "s3" and not opts.object_store.bucket:
        raise InvalidArgument("an S3 object store needs a bucket")
    if opts.object_store.backend == "azure":
        check_container(opts.object_store.bucket)
        endpoint = opts.object_store.endpoint
        if endpoint and not endpoint.startswith("https://"):
            raise InvalidArgument(f"--endpoint {endpoint!r} must be an https:// URL")


def _meta(name: str, opts: DeployOptions, labels: Mapping[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": opts.namespace, "labels": {**PART_OF}}
    if labels:
        meta["labels"].update(labels)
    return meta


def namespace(opts: DeployOptions) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": opts.namespace, "labels": {**PART_OF}},
    }


# What pps needs to run pipeline workers (docs/kubernetes.md): controllers,
# their pods and services, the secrets pipelines mount; and reading pods
# (logs, state).
_WORKER_RULES = [
    {
        "apiGroups": [""],
        "resources": [
            "pods",
            "pods/log",
            "services",
            "secrets",
            "replicationcontrollers",
            "replicationcontrollers/scale",
        ],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    },
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "deployments/scale"],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    },
]


def rbac(opts: DeployOptions) -> list[Obj]:
    sa: Obj = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(SERVICE_ACCOUNT, opts),
    }
    if opts.image_pull_secret:
        sa["imagePullSecrets"] = [{"name": opts.image_pull_secret}]
    if not opts.rbac:
        return [sa]
    role_kind = "Role" if opts.local_roles else "ClusterRole"
    role_meta = _meta(SERVICE_ACCOUNT, opts)
    if not opts.local_roles:
        role_meta.pop("namespace")
    role: Obj = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": role_kind,
        "metadata": role_meta,
        "rules": _WORKER_RULES,
    }
    binding_meta = dict(role_meta)
    binding: Obj = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": f"{role_kind}Binding",
        "metadata": binding_meta,
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": SERVICE_ACCOUNT,
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": opts.namespace}
        ],
    }
    return [sa, role, binding]


def config_map(opts: DeployOptions) -> Obj:
    store = opts.object_store
    data: dict[str, str] = {
        "PACH_NATS_URL": "nats://nats:4222",
        "PACH_LOG_FORMAT": "json",
        "PACH_LOG_LEVEL": opts.log_level,
        "PACH_EVENTS_REPLICAS": str(min(3, opts.nats_nodes)),
        "PACH_OBJECT_BACKEND": store.backend,
        "PACH_PPS_RUNNER": opts.worker_runner,
        "PACH_PPS_WORKER_IMAGE": opts.full_image,
        "PACH_PPS_NAMESPACE": opts.namespace,
    }
    if opts.image_pull_secret:
        data["PACH_PPS_IMAGE_PULL_SECRET"] = opts.image_pull_secret
    if store.backend == "s3":
        data.update(
            PACH_S3_BUCKET=store.bucket,
            PACH_S3_ENDPOINT=store.endpoint,
            PACH_S3_REGION=store.region,
            PACH_S3_PREFIX=store.prefix,
        )
    elif store.backend == "azure":
        data["PACH_AZURE_CONTAINER"] = store.bucket
        if store.endpoint:
            data["PACH_AZURE_ENDPOINT"] = store.endpoint
        if store.prefix:
            data["PACH_AZURE_PREFIX"] = store.prefix
    else:
        data["PACH_OBJECT_DIR"] = "/var/pachyderm/objects"
        data["PACH_PPS_OBJECTS_HOST_PATH"] = store.host_path  # workers mount it too
    if opts.mongodb_uri:
        data.update(PACH_READMODEL_BACKEND="mongo", MONGODB_URI=opts.mongodb_uri)
    else:  # projections rebuilt from the event log by each pod at start
        data.update(PACH_READMODEL_BACKEND="sqlite", PACH_READMODEL_DIR="/tmp/readmodels")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(CONFIG_MAP, opts),
        "data": dict(sorted(data.items())),
    }


def storage_secret(opts: DeployOptions, values: Mapping[str, str]) -> Obj:
    """The object store's credentials (``pachctl deploy storage``)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(STORAGE_SECRET, opts),
        "type": "Opaque",
        "stringData": dict(values),
    }


def nats_conf(opts: DeployOptions) -> str:
    routes = "\n".join(
        f"    nats://nats-{i}.nats-cluster.{opts.namespace}.svc:6222"
        for i in range(opts.nats_nodes)
    )
    cluster = (
        f"cluster {{\n  name: pachyderm\n  listen: 0.0.0.0:6222\n  routes: [\n{routes}\n  ]\n}}\n"
        if opts.nats_nodes > 1
        else ""
    )
    return (
        "listen: 0.0.0.0:4222\n"
        "http: 0.0.0.0:8222\n"
        "server_name: $POD_NAME\n"
        "max_payload: 8MB\n"
        "jetstream {\n  store_dir: /data/jetstream\n  sync_interval: always\n}\n"
        "# Users, bcrypt hashes and permissions: the pachyderm-nats-server Secret.\n"
        'include "auth/auth.conf"\n' + cluster
    )


def nats(opts: DeployOptions) -> list[Obj]:
    labels = {"app": "nats"}
    conf: Obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta("nats-config", opts),
        "data": {"nats.conf": nats_conf(opts)},
    }
    client: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta("nats", opts, labels),
        "spec": {"selector": labels, "ports": [{"name": "client", "port": 4222}]},
    }
    cluster: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta("nats-cluster", opts, labels),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": labels,
            "ports": [{"name": "cluster", "port": 6222}, {"name": "monitor", "port": 8222}],
        },
    }
    res = opts.nats_resources
    claim: Obj = {
        "metadata": {"name": "data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": opts.nats_volume_size}},
        },
    }
    if opts.nats_storage_class:
        claim["spec"]["storageClassName"] = opts.nats_storage_class
    health = {"path": "/healthz?js-enabled-only=true", "port": 8222}
    sts: Obj = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta("nats", opts, labels),
        "spec": {
            "serviceName": "nats-cluster",
            "replicas": opts.nats_nodes,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, **PART_OF}},
                "spec": {
                    "containers": [
                        {
                            "name": "nats",
                            "image": opts.nats_image,
                            "args": ["-c", "/etc/nats/nats.conf"],
                            "env": [
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                }
                            ],
                            "ports": [
                                {"name": "client", "containerPort": 4222},
                                {"name": "cluster", "containerPort": 6222},
                                {"name": "monitor", "containerPort": 8222},
                            ],
                            "readinessProbe": {"httpGet": health, "periodSeconds": 5},
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": 8222},
                                "periodSeconds": 10,
                                "failureThreshold": 6,
                            },
                            "resources": {"requests": {"cpu": res.cpu, "memory": res.memory}},
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/etc/nats"},
                                {"name": "auth", "mountPath": "/etc/nats/auth", "readOnly": True},
                                {"name": "data", "mountPath": "/data"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "config", "configMap": {"name": "nats-config"}},
                        {
                            "name": "auth",
                            "secret": {"secretName": NATS_SERVER_SECRET, "defaultMode": 0o400},
                        },
                    ],
                },
            },
            "volumeClaimTemplates": [claim],
        },
    }
    return [conf, client, cluster, sts, _pdb("nats", opts)]


def _pdb(app: str, opts: DeployOptions) -> Obj:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(app, opts, {"app": app}),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": app}}},
    }


def _probe_cmd(service: str, live: bool) -> list[str]:
    cmd = ["python", "-m", "libs.deploy.probe", service]
    return [*cmd, "--live"] if live else cmd


def _probes(service: str) -> Obj:
    if service == "gateway":
        return {
            "readinessProbe": {"grpc": {"port": GRPC_PORT}, "periodSeconds": 5},
            "livenessProbe": {
                "httpGet": {"path": "/health", "port": HTTP_PORT},
                "periodSeconds": 10,
                "failureThreshold": 6,
            },
        }
    return {
        "readinessProbe": {
            "exec": {"command": _probe_cmd(service, live=False)},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
        },
        "livenessProbe": {
            "exec": {"command": _probe_cmd(service, live=True)},
            "initialDelaySeconds": 30,
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
    }


def deployment(service: str, opts: DeployOptions) -> Obj:
    labels = {"app": service}
    env: list[Obj] = [
        {"name": "SERVICE", "value": service},
        {"name": "PACH_REPLICA", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "PACH_NATS_USER", "value": service},
        {
            "name": "PACH_NATS_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": NATS_SECRET, "key": service}},
        },
    ]
    if service == "gateway":
        # A pod serves other pods: listen on every interface, and answer
        # HTTP requests naming the Service (the gateway's Host check).
        names = ["pachd", f"pachd.{opts.namespace}", f"pachd.{opts.namespace}.svc",
                 f"pachd.{opts.namespace}.svc.cluster.local"]  # fmt: skip
        if not opts.dashboard:
            names += [n.replace("pachd", "pachd-http", 1) for n in names]
        env += [
            {"name": "PACH_BIND_ADDRESS", "value": "0.0.0.0"},
            {"name": "PACH_HTTP_ALLOWED_HOSTS", "value": ",".join(names)},
        ]
    if service == "pps":
        env += [
            {"name": "PACH_NATS_WORKER_USER", "value": "pps-worker"},
            {
                "name": "PACH_NATS_WORKER_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": NATS_SECRET, "key": "pps-worker"}},
            },
        ]
    res = opts.resources_of(service)
    container: Obj = {
        "name": service,
        "image": opts.full_image,
        "env": env,
        "envFrom": [
            {"configMapRef": {"name": CONFIG_MAP}},
            {"secretRef": {"name": STORAGE_SECRET, "optional": True}},
        ],
        "resources": {"requests": {"cpu": res.cpu, "memory": res.memory}},
        **_probes(service),
    }
    if service == "gateway":
        container["ports"] = [
            {"name": "grpc", "containerPort": GRPC_PORT},
            {"name": "http", "containerPort": HTTP_PORT},
        ]
    pod: Obj = {
        "serviceAccountName": SERVICE_ACCOUNT,
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
    }
    if opts.image_pull_secret:
        pod["imagePullSecrets"] = [{"name": opts.image_pull_secret}]
    if opts.object_store.backend == "local" and service in ("pfs", "pps", "admin"):
        container["volumeMounts"] = [{"name": "objects", "mountPath": "/var/pachyderm/objects"}]
        pod["volumes"] = [
            {
                "name": "objects",
                "hostPath": {"path": opts.object_store.host_path, "type": "DirectoryOrCreate"},
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(service, opts, labels),
        "spec": {
            "replicas": opts.replicas_of(service),
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": {**labels, **PART_OF}}, "spec": pod},
        },
    }


def autoscaler(service: str, opts: DeployOptions) -> Obj:
    low = max(1, opts.replicas_of(service))
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(service, opts, {"app": service}),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": service},
            "minReplicas": low,
            "maxReplicas": max(low, opts.max_replicas),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 75},
                    },
                }
            ],
        },
    }


def gateway_services(opts: DeployOptions) -> list[Obj]:
    """gRPC and HTTP (API and dashboard) on NodePorts 30650 / 30080; with
    ``--no-dashboard`` only gRPC is on the nodes, and HTTP is a ClusterIP
    Service ``pachd-http`` (inside the cluster and ``pachctl port-forward``)."""
    grpc = {"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT, "nodePort": GRPC_PORT}
    http = {"name": "http", "port": HTTP_PORT, "targetPort": HTTP_PORT, "nodePort": HTTP_PORT}

    def service(name: str, kind: str, ports: list[Obj]) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(name, opts, {"app": "gateway"}),
            "spec": {"type": kind, "selector": {"app": "gateway"}, "ports": ports},
        }

    if opts.dashboard:
        return [service("pachd", "NodePort", [grpc, http])]
    http.pop("nodePort")
    return [service("pachd", "NodePort", [grpc]), service("pachd-http", "ClusterIP", [http])]


def cluster(opts: DeployOptions, *, storage: Mapping[str, str] | None = None) -> list[Obj]:
    """Every object of a deployment, in the order to create them."""
    validate(opts)
    out: list[Obj] = []
    if opts.namespace != "default":
        out.append(namespace(opts))
    out += rbac(opts)
    if storage:
        out.append(storage_secret(opts, storage))
    out.append(config_map(opts))
    out += nats(opts)
    for service in SERVICES:
        out.append(deployment(service, opts))
        if service in STATELESS:
            out.append(autoscaler(service, opts))
        out.append(_pdb(service, opts))
    out += gateway_services(opts)
    return out


def nats_secrets(opts: DeployOptions, passwords: Mapping[str, str], auth_conf: str) -> list[Obj]:
    """The two NATS Secrets: every role's password (key = user) and the
    server's ``auth.conf`` (bcrypt hashes only)."""
    return [
        storage_secret_like(NATS_SECRET, opts, passwords),
        storage_secret_like(NATS_SERVER_SECRET, opts, {"auth.conf": auth_conf}),
    ]


def storage_secret_like(name: str, opts: DeployOptions, values: Mapping[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(name, opts),
        "type": "Opaque",
        "stringData": dict(values),
    }


def names(objs: Sequence[Obj]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objs]
