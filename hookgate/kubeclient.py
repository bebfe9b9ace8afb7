"""The Kubernetes API client both cluster components use (operator and deliverer)."""

from __future__ import annotations

import kubernetes
from kubernetes.client import ApiClient

__all__ = ["load_client"]


def load_client(kubeconfig: str | None = None) -> ApiClient:
    """In a pod, the pod's service account; elsewhere ``kubeconfig`` or $KUBECONFIG."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration)
    return ApiClient(configuration)
