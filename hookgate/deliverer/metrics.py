"""Prometheus metrics of one gateway. Each gateway has its own registry, so tests can run
several in one process and the operator never mixes two gateways' numbers.

The four series every delivery touches (outcomes, attempt duration, end-to-end latency, in
flight) are plain counters of :class:`DeliveryMetrics`, turned into metric families only
when scraped: a prometheus_client child takes a lock and validates on every update, five
times per delivery, which measurably cost delivery throughput (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from hookgate.deliverer.queues.base import Depth

__all__ = ["DeliveryMetrics", "EndpointSeries", "Metrics"]

DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LATENCY_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 6 * 3600,
    24 * 3600)


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
        self.delivery = DeliveryMetrics(gateway)
        r.register(self.delivery)
        self.queue_depth = Gauge(
            "hookgate_queue_depth",
            "Deliveries in the queue by state (ready, delayed, leased, dead).",
            ["gateway", "state"], registry=r)
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


@functools.cache
def _le_labels(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """Bucket bounds as prometheus_client writes ``le`` labels (1 -> "1.0", then "+Inf")."""
    return tuple(floatToGoString(b)  # type: ignore[no-untyped-call]
                 for b in (*bounds, float("inf")))


class _Buckets:
    """A histogram's per-bucket counts (not cumulative) and sum."""

    __slots__ = ("bounds", "counts", "labels", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.labels = _le_labels(bounds)
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for label, count in zip(self.labels, self.counts, strict=True):
            total += count
            out.append((label, total))
        return out


class EndpointSeries:
    """What deliveries to one endpoint did, in this process. Updated on the event loop only."""

    __slots__ = ("duration", "end_to_end", "in_flight", "outcomes")

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.duration = _Buckets(DURATION_BUCKETS)
        self.end_to_end = _Buckets(LATENCY_BUCKETS)
        self.in_flight = 0

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


class DeliveryMetrics:
    """A Prometheus collector of the per-endpoint delivery series: ``hookgate_deliveries``
    (by outcome: success, retry, dead, gone), ``hookgate_delivery_duration_seconds``,
    ``hookgate_end_to_end_latency_seconds`` and ``hookgate_deliveries_in_flight``."""

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self._series: dict[str, EndpointSeries] = {}

    def of(self, endpoint: str) -> EndpointSeries:
        series = self._series.get(endpoint)
        if series is None:
            series = self._series[endpoint] = EndpointSeries()
        return series

    def forget(self, keep: set[str]) -> None:
        """Drop the series of endpoints no longer configured (and idle)."""
        for key in [k for k, s in self._series.items() if k not in keep and not s.in_flight]:
            del self._series[key]

    def describe(self) -> list[Metric]:
        return list(self._families({}))

    def collect(self) -> Iterator[Metric]:
        return self._families(dict(self._series))

    def _families(self, series: dict[str, EndpointSeries]) -> Iterator[Metric]:
        labels = ["gateway", "endpoint"]
        outcomes = CounterMetricFamily(
            "hookgate_deliveries", "Delivery attempts by outcome (success, retry, dead, gone).",
            labels=[*labels, "outcome"])
        duration = HistogramMetricFamily(
            "hookgate_delivery_duration_seconds", "Duration of one HTTP delivery attempt.",
            labels=labels)
        end_to_end = HistogramMetricFamily(
            "hookgate_end_to_end_latency_seconds",
            "From an event's acceptance to its successful delivery (2xx).", labels=labels)
        in_flight = GaugeMetricFamily(
            "hookgate_deliveries_in_flight", "HTTP deliveries under way in this process.",
            labels=labels)
        for endpoint, s in sorted(series.items()):
            values = [self.gateway, endpoint]
            for outcome, n in sorted(s.outcomes.items()):
                outcomes.add_metric([*values, outcome], n)
            if any(s.duration.counts):
                duration.add_metric(values, s.duration.cumulative(), s.duration.sum)
            if any(s.end_to_end.counts):
                end_to_end.add_metric(values, s.end_to_end.cumulative(), s.end_to_end.sum)
            in_flight.add_metric(values, s.in_flight)
        yield from (outcomes, duration, end_to_end, in_flight)
