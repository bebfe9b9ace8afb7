"""Manifests Hookgate must reject, with the field and a fragment of the message.

One table for every checker: the unit tests run it through ``hookgate.model.schema``, the
end-to-end tests apply it to a real kube-apiserver with the CRDs installed, and the
``hookgate validate`` tests run the CLI on it. The fragments are worded so the API server's
error and the offline one both contain them. Every object has its own name, so the whole
table can be applied to one namespace.
"""

from __future__ import annotations

from typing import Any

__all__ = ["INVALID_OBJECTS", "InvalidObject"]

InvalidObject = tuple[str, dict[str, Any], str, str]
"""(test id, manifest, field path of the problem, fragment of its message)."""

API = "hookgate.io/v1alpha1"


def _endpoint(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "WebhookEndpoint", "metadata": {"name": name},
            "spec": {"url": "https://hooks.example.com/in", **spec}}


def _gateway(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "WebhookGateway", "metadata": {"name": name},
            "spec": {"queue": {"redis": {"url": "redis://redis:6379/0"}}, **spec}}


def _subscription(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Subscription", "metadata": {"name": name},
            "spec": {"endpointRef": {"name": "acme"}, "eventTypes": ["order.*"], **spec}}


def _source(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "WebhookSource", "metadata": {"name": name},
            "spec": spec}


_VERIFY = {"scheme": "github", "secretRef": {"name": "github-webhook"}}
_KAFKA = {"bootstrapServers": ["kafka:9092"], "topics": ["orders"]}

INVALID_OBJECTS: list[InvalidObject] = [
    ("endpoint-missing-url",
     {**_endpoint("missing-url"), "spec": {"timeout": "10s"}},
     "spec.url", "Required value"),
    ("endpoint-missing-spec",
     {"apiVersion": API, "kind": "WebhookEndpoint", "metadata": {"name": "no-spec"}},
     "spec", "Required value"),
    ("endpoint-bad-url",
     _endpoint("bad-url", url="ftp://hooks.example.com/in"),
     "spec.url", "should match"),
    ("endpoint-bad-duration",
     _endpoint("bad-duration", retry={"schedule": ["0s", "5 minutes"]}),
     "spec.retry.schedule[1]", "should match"),
    ("endpoint-zero-timeout",
     _endpoint("zero-timeout", timeout="0s"),
     "spec.timeout", "timeout must be longer than 0s"),
    ("endpoint-empty-schedule",
     _endpoint("empty-schedule", retry={"schedule": []}),
     "spec.retry.schedule", "the retry schedule needs at least one delay"),
    ("endpoint-decreasing-schedule",
     _endpoint("decreasing-schedule", retry={"schedule": ["0s", "5m", "1m"]}),
     "spec.retry.schedule", "the retry schedule must not decrease"),
    ("endpoint-unknown-field",
     _endpoint("unknown-field", urll="https://typo.example.com"),
     "spec.urll", 'unknown field "spec.urll"'),
    ("endpoint-zero-rate",
     _endpoint("zero-rate", rateLimit={"perSecond": 0}),
     "spec.rateLimit.perSecond", "should be greater than 0"),
    ("endpoint-max-in-flight-not-a-number",
     _endpoint("max-in-flight-text", maxInFlight="lots"),
     "spec.maxInFlight", "must be of type integer"),
    ("endpoint-basic-and-bearer",
     _endpoint("basic-and-bearer", auth={"basic": {"secretRef": {"name": "a"}},
                                         "bearer": {"secretRef": {"name": "b"}}}),
     "spec.auth", "auth.basic and auth.bearer both set the Authorization header"),
    ("gateway-min-above-max",
     _gateway("min-above-max", autoscaling={"minReplicas": 5, "maxReplicas": 2}),
     "spec.autoscaling", "minReplicas must not be greater than autoscaling.maxReplicas"),
    ("gateway-url-and-url-from",
     _gateway("url-and-url-from", queue={"redis": {
         "url": "redis://redis:6379/0", "urlFrom": {"secretKeyRef": {"name": "redis"}}}}),
     "spec.queue.redis", "set exactly one of queue.redis.url or queue.redis.urlFrom"),
    ("gateway-neither-url-nor-url-from",
     _gateway("no-redis-url", queue={"redis": {}}),
     "spec.queue.redis", "set exactly one of queue.redis.url or queue.redis.urlFrom"),
    ("gateway-redis-url-scheme",
     _gateway("redis-url-scheme", queue={"redis": {"url": "http://redis:6379/0"}}),
     "spec.queue.redis.url", "should match"),
    ("gateway-negative-replica-acks",
     _gateway("negative-replica-acks", queue={"redis": {
         "url": "redis+sentinel://s1:26379,s2:26379/mymaster", "minReplicaAcks": -1}}),
     "spec.queue.redis.minReplicaAcks", "greater than or equal to 0"),
    ("gateway-unknown-mode",
     _gateway("unknown-mode", autoscaling={"mode": "Auto"}),
     "spec.autoscaling.mode", 'Unsupported value: "Auto"'),
    ("gateway-bad-cidr",
     _gateway("bad-cidr", network={"allowCIDRs": ["10.0.0.0/8", "10.0.0.300/8"]}),
     "spec.network.allowCIDRs", "must be a CIDR"),
    ("subscription-bad-event-type-glob",
     _subscription("bad-glob", eventTypes=["order created"]),
     "spec.eventTypes[0]", "should match"),
    ("subscription-no-event-types",
     _subscription("no-event-types", eventTypes=[]),
     "spec.eventTypes", "should have at least 1 items"),
    ("source-path-and-broker",
     _source("path-and-broker", path="/in/shop/orders", broker={"kafka": _KAFKA}),
     "spec", "set either path (an HTTP source) or broker (a broker source), not both"),
    ("source-two-brokers",
     _source("two-brokers", broker={"kafka": _KAFKA, "nats": {"url": "nats://nats:4222",
                                                             "stream": "orders"}}),
     "spec.broker", "broker takes exactly one of kafka, sqs, pubsub, amqp, nats or redis"),
    ("source-http-without-verify",
     _source("no-verify", path="/in/shop/github"),
     "spec.verify", "an HTTP source needs verify"),
    ("source-empty-spec",
     _source("empty-spec"),
     "spec.verify", "an HTTP source needs verify"),
    ("source-hmac-without-header",
     _source("hmac-no-header", verify={"scheme": "hmac", "secretRef": {"name": "s"}}),
     "spec.verify.header", "scheme hmac needs header"),
    ("source-unknown-scheme",
     _source("unknown-scheme", verify={**_VERIFY, "scheme": "gitlab"}),
     "spec.verify.scheme", 'Unsupported value: "gitlab"'),
    ("wrong-api-version",
     {**_endpoint("wrong-version"), "apiVersion": "hookgate.io/v1"},
     "apiVersion", 'in version "hookgate.io/v1"'),
    ("bad-name",
     _subscription("Orders_1"),
     "metadata.name", "lowercase RFC 1123 subdomain"),
    ("secret-data-not-base64",
     {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "not-base64"},
      "data": {"secret": "whsec_not base64!"}},
     "data.secret", "illegal base64 data"),
]
