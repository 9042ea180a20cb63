"""A small generic client over kubernetes-asyncio's ``ApiClient``: create,
read, merge-patch, delete and list any of the kinds this project makes, by
their REST paths (one table, ``KINDS``). ``apply`` creates an object or
patches it to what it should be."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from libs.errors import FailedPrecondition, InvalidArgument, Unavailable

Obj = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    prefix: str  # "api/v1" or "apis/<group>/<version>"
    plural: str
    namespaced: bool = True


KINDS: dict[str, Kind] = {
    "Namespace": Kind("api/v1", "namespaces", namespaced=False),
    "ServiceAccount": Kind("api/v1", "serviceaccounts"),
    "Secret": Kind("api/v1", "secrets"),
    "ConfigMap": Kind("api/v1", "configmaps"),
    "Service": Kind("api/v1", "services"),
    "Pod": Kind("api/v1", "pods"),
    "ReplicationController": Kind("api/v1", "replicationcontrollers"),
    "PersistentVolumeClaim": Kind("api/v1", "persistentvolumeclaims"),
    "Deployment": Kind("apis/apps/v1", "deployments"),
    "StatefulSet": Kind("apis/apps/v1", "statefulsets"),
    "HorizontalPodAutoscaler": Kind("apis/autoscaling/v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": Kind("apis/policy/v1", "poddisruptionbudgets"),
    "ClusterRole": Kind("apis/rbac.authorization.k8s.io/v1", "clusterroles", namespaced=False),
    "ClusterRoleBinding": Kind(
        "apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", namespaced=False
    ),
    "Role": Kind("apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": Kind("apis/rbac.authorization.k8s.io/v1", "rolebindings"),
}


def path(kind: str, namespace: str, name: str = "") -> str:
    try:
        k = KINDS[kind]
    except KeyError:
        raise InvalidArgument(f"no Kubernetes kind {kind!r} here") from None
    base = f"/{k.prefix}"
    if k.namespaced:
        base += f"/namespaces/{namespace}"
    base += f"/{k.plural}"
    return f"{base}/{name}" if name else base


async def connect(kubeconfig: str = "", context: str = "") -> k8s.ApiClient:
    """An API client: in a pod, its service account; otherwise the kube
    config (``kubeconfig``, else ``$KUBECONFIG``, else ~/.kube/config)."""
    cfg = k8s.Configuration()
    if not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST") and not context:
        k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        try:
            await k8s_config.load_kube_config(
                config_file=kubeconfig or None,
                context=context or None,
                client_configuration=cfg,
            )
        except (k8s_config.ConfigException, OSError) as exc:
            raise FailedPrecondition(f"no Kubernetes cluster to talk to: {exc}") from None
    return k8s.ApiClient(configuration=cfg)


class Kube:
    def __init__(self, api: k8s.ApiClient, timeout: float = 30.0) -> None:
        self.api = api
        self.timeout = timeout  # seconds per request: none hangs forever

    async def _call(
        self,
        method: str,
        url: str,
        body: Obj | None = None,
        *,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> Obj:
        try:
            result = await self.api.call_api(
                url,
                method,
                query_params=query or [],
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                response_types_map={200: "object", 201: "object", 202: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=self.timeout,
            )
        except ApiException:
            raise
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            raise Unavailable(f"the Kubernetes API is unreachable: {exc!r}") from None
        return dict(result) if isinstance(result, dict) else {}

    async def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        try:
            return await self._call("GET", path(kind, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, kind: str, namespace: str, selector: str = "") -> list[Obj]:
        query = [("labelSelector", selector)] if selector else []
        try:
            got = await self._call("GET", path(kind, namespace), query=query)
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise
        items = [dict(i) for i in got.get("items") or []]
        if selector:  # also when the server ignores the selector
            want = dict(part.split("=", 1) for part in selector.split(","))
            items = [
                i
                for i in items
                if all(
                    (i.get("metadata", {}).get("labels") or {}).get(k) == v for k, v in want.items()
                )
            ]
        return items

    async def create(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        return await self._call("POST", path(obj["kind"], meta.get("namespace", "")), obj)

    async def patch(self, kind: str, namespace: str, name: str, patch: Obj) -> Obj:
        return await self._call(
            "PATCH",
            path(kind, namespace, name),
            patch,
            content_type="application/merge-patch+json",
        )

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete (pods of controllers go with them); False if it was not there."""
        try:
            await self._call(
                "DELETE",
                path(kind, namespace, name),
                {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def apply(self, obj: Obj) -> str:
        """Create ``obj``, or patch the existing one to it: "created" or
        "configured"."""
        meta = obj["metadata"]
        existing = await self.get(obj["kind"], meta.get("namespace", ""), meta["name"])
        if existing is None:
            await self.create(obj)
            return "created"
        await self.patch(obj["kind"], meta.get("namespace", ""), meta["name"], obj)
        return "configured"
