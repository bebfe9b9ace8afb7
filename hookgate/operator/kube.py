"""The operator's Kubernetes I/O: server-side apply, reads, status patches, scaling.

One client for the job (the official ``kubernetes`` package); its calls are blocking, so
each runs in a worker thread. Children are applied with server-side apply under the field
manager ``hookgate-operator``: re-applying an unchanged object writes nothing, and a child
edited or deleted by hand converges back on the next reconcile.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Mapping
from typing import Any

from kubernetes.client import ApiClient

from hookgate.operator.metrics import API_REQUESTS

__all__ = ["FIELD_MANAGER", "ApiError", "Kube", "NotFound", "secret_values"]

FIELD_MANAGER = "hookgate-operator"
GROUP_VERSION = "hookgate.io/v1alpha1"

# kind -> (apiVersion, plural); the kinds the operator reads or writes.
KINDS: dict[str, tuple[str, str]] = {
    "ConfigMap": ("v1", "configmaps"),
    "Secret": ("v1", "secrets"),
    "Service": ("v1", "services"),
    "ServiceAccount": ("v1", "serviceaccounts"),
    "Deployment": ("apps/v1", "deployments"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets"),
    "Role": ("rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings"),
    "ScaledObject": ("keda.sh/v1alpha1", "scaledobjects"),
    "TriggerAuthentication": ("keda.sh/v1alpha1", "triggerauthentications"),
    "WebhookGateway": (GROUP_VERSION, "webhookgateways"),
    "WebhookEndpoint": (GROUP_VERSION, "webhookendpoints"),
    "Subscription": (GROUP_VERSION, "subscriptions"),
    "WebhookSource": (GROUP_VERSION, "webhooksources"),
}


class NotFound(Exception):
    pass


class ApiError(Exception):
    """The API server refused a request; ``str()`` is its message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def _message(raw: bytes) -> str:
    try:
        return str(json.loads(raw).get("message", raw[:500]))
    except ValueError:
        return raw[:500].decode(errors="replace")



def _path(kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
    api_version, plural = KINDS[kind]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


def _resource(path: str) -> str:
    """The resource (and subresource) a request path names: ``subscriptions/status``;
    ``discovery`` for a path of the API's own (what a group serves)."""
    parts = path.strip("/").split("/")
    if "namespaces" in parts:
        rest = parts[parts.index("namespaces") + 2:]
        return "/".join([rest[0], *rest[2:3]]) if rest else "namespaces"
    return "discovery"


class Kube:
    def __init__(self, client: ApiClient) -> None:
        self.client = client

    async def _call(self, method: str, path: str, *, body: Any = None,
                    content_type: str = "application/json",
                    query: list[tuple[str, str]] | None = None,
                    request_timeout: float = 60) -> Any:
        resource = _resource(path)
        collection = method == "GET" and path.rstrip("/").endswith(resource)
        API_REQUESTS.labels("LIST" if collection else method, resource).inc()
        def call() -> Any:
            method_, url, headers, _, _ = self.client.param_serialize(
                method, path, query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                auth_settings=["BearerToken"])
            resp = self.client.call_api(method_, url, header_params=headers, body=body,
                                        _request_timeout=request_timeout)
            raw: bytes = resp.read()  # type: ignore[no-untyped-call]
            if resp.status == 404:
                raise NotFound(path)
            if resp.status >= 400:
                raise ApiError(resp.status, _message(raw))
            return json.loads(raw) if raw else None

        return await asyncio.to_thread(call)

    async def apply(self, obj: Mapping[str, Any], *, force: bool = True) -> Any:
        """Server-side apply of a whole object (it must carry kind, name and namespace)."""
        md = obj["metadata"]
        return await self._call(
            "PATCH", _path(obj["kind"], md["namespace"], md["name"]), body=obj,
            content_type="application/apply-patch+yaml",
            query=[("fieldManager", FIELD_MANAGER), ("force", "true" if force else "false")])

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", _path(kind, namespace, name))
        return result

    async def find(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.get(kind, namespace, name)
        except NotFound:
            return None

    async def list(self, kind: str, namespace: str, *, label_selector: str | None = None
                   ) -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else None
        result = await self._call("GET", _path(kind, namespace), query=query)
        items: list[dict[str, Any]] = result.get("items", [])
        api_version = KINDS[kind][0]
        for item in items:  # list items come without kind/apiVersion
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", api_version)
        return items

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        await self._call("DELETE", _path(kind, namespace, name))

    async def create(self, obj: Mapping[str, Any]) -> Any:
        md = obj["metadata"]
        return await self._call("POST", _path(obj["kind"], md["namespace"]), body=obj)

    async def patch_status(self, kind: str, namespace: str, name: str,
                           status: Mapping[str, Any]) -> None:
        with contextlib.suppress(NotFound):  # deleted meanwhile: nothing to report on
            await self._call("PATCH", _path(kind, namespace, name, "status"),
                             body={"status": status},
                             content_type="application/merge-patch+json")

    async def scale(self, kind: str, namespace: str, name: str, replicas: int) -> None:
        await self._call("PATCH", _path(kind, namespace, name, "scale"),
                         body={"spec": {"replicas": replicas}},
                         content_type="application/merge-patch+json")

    async def can_list_gateways(self, namespace: str | None) -> None:
        """Raise unless the API server lets us list WebhookGateways (in ``namespace``, or in
        every namespace for None) within 5 s: what the readiness probe asks."""
        plural = KINDS["WebhookGateway"][1]
        where = f"/namespaces/{namespace}" if namespace else ""
        await self._call("GET", f"/apis/{GROUP_VERSION}{where}/{plural}",
                         query=[("limit", "1")], request_timeout=5)

    async def has_api(self, group_version: str, plural: str) -> bool:
        """Whether the API server serves this resource (e.g. KEDA's ScaledObjects)."""
        try:
            result = await self._call("GET", f"/apis/{group_version}")
        except (NotFound, ApiError):
            return False
        return any(r.get("name") == plural for r in result.get("resources", []))


def secret_values(secret: Mapping[str, Any]) -> dict[str, str]:
    """The decoded data of a Secret as read from the API."""
    out = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    out.update(secret.get("stringData") or {})
    return out
