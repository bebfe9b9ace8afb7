"""Prometheus metrics of one gateway. Each gateway has its own registry, so tests can run
several in one process and the operator never mixes two gateways' numbers."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from hookgate.deliverer.queue import Depth

__all__ = ["Metrics"]

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600,
                   6 * 3600, 24 * 3600)


class Metrics:
    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_ingested = Counter(
            "hookgate_events_ingested", "Events accepted and durably enqueued.",
            ["gateway", "source"], registry=r)
        self.events_rejected = Counter(
            "hookgate_events_rejected", "Ingest requests refused, by reason.",
            ["gateway", "reason"], registry=r)
        self.deliveries = Counter(
            "hookgate_deliveries", "Delivery attempts by outcome (success, retry, dead, gone).",
            ["gateway", "endpoint", "outcome"], registry=r)
        self.delivery_duration = Histogram(
            "hookgate_delivery_duration_seconds", "Duration of one HTTP delivery attempt.",
            ["gateway", "endpoint"], buckets=DURATION_BUCKETS, registry=r)
        self.end_to_end = Histogram(
            "hookgate_end_to_end_latency_seconds",
            "From an event's acceptance to its successful delivery (2xx).",
            ["gateway", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge(
            "hookgate_queue_depth",
            "Deliveries in the queue by state (ready, delayed, leased, dead).",
            ["gateway", "state"], registry=r)
        self.in_flight = Gauge(
            "hookgate_deliveries_in_flight", "HTTP deliveries under way in this process.",
            ["gateway", "endpoint"], registry=r)
        self.inbound_accepted = Counter(
            "hookgate_inbound_accepted",
            "Inbound webhook requests verified and answered 2xx (duplicates included).",
            ["gateway", "source"], registry=r)
        self.inbound_rejected = Counter(
            "hookgate_inbound_rejected",
            "Inbound webhook requests refused, by reason (missing_signature, bad_signature, "
            "stale_timestamp, ...).", ["gateway", "source", "reason"], registry=r)
        self.config_reloads = Counter(
            "hookgate_config_reloads", "Routing config changes applied, by result (ok, error).",
            ["gateway", "result"], registry=r)

        self.circuit_state = Gauge(
            "hookgate_circuit_state",
            "Circuit breaker of each endpoint in this process: 0 closed, 1 half-open, 2 open.",
            ["gateway", "endpoint"], registry=r)
        self.endpoint_paused = Gauge(
            "hookgate_endpoint_paused",
            "1 while an endpoint is paused at runtime (410 Gone, auto-disable), else 0.",
            ["gateway", "endpoint"], registry=r)
        self.postponed = Counter(
            "hookgate_deliveries_postponed",
            "Deliveries handed back without an attempt, by reason (paused, circuit_open, "
            "saturated, rate_limited).",
            ["gateway", "endpoint", "reason"], registry=r)
        self.filter_errors = Counter(
            "hookgate_filter_errors",
            "Events a subscription's CEL filter (or an endpoint's ordering key) could not be "
            "evaluated on; a failing filter counts as no match.",
            ["gateway", "subscription"], registry=r)

    def set_depth(self, depth: Depth) -> None:
        for state in ("ready", "delayed", "leased", "dead"):
            self.queue_depth.labels(self.gateway, state).set(getattr(depth, state))

    def render(self) -> bytes:
        return generate_latest(self.registry)
