"""Prometheus metrics of the operator: what it asks of the API server, and why.

``hookgate operator --metrics HOST:PORT`` serves them on ``/metrics``. The request counter
is what shows the operator's cost at rest: while nothing changes it stays still (see
docs/operator.md); the watches kopf keeps open are not counted here.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

__all__ = ["API_REQUESTS", "BACKLOG_POLLS", "PUBLISHES", "REGISTRY", "STATUS_WRITES"]

REGISTRY = CollectorRegistry(auto_describe=True)

API_REQUESTS = Counter(
    "hookgate_operator_api_requests", "Requests the operator made to the Kubernetes API "
    "(reads, applies, status patches, scaling), by verb and resource; watches excluded.",
    ["verb", "resource"], registry=REGISTRY)
PUBLISHES = Counter(
    "hookgate_operator_publishes", "Times a gateway's config was compiled and its children "
    "applied, by why: inputs changed, a child changed or went missing, or the periodic "
    "resync.", ["reason"], registry=REGISTRY)
BACKLOG_POLLS = Counter(
    "hookgate_operator_backlog_polls", "Polls of the gateways' queue backlog (autoscaling), "
    "read from the queue alone.", registry=REGISTRY)
STATUS_WRITES = Counter(
    "hookgate_operator_status_writes", "Status patches of endpoints, subscriptions, sources "
    "and gateways (only changed statuses are written).", registry=REGISTRY)
