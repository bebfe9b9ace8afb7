"""Compiling sources: HTTP WebhookSources and spec.broker, their secrets kept apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from hookgate.model.routing import BrokerConfig, RoutingConfig
from tests.support.manifests import compile_text, secret, source


def test_sources_compile_without_their_secrets(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, source("github", (
        "  verify: {scheme: github, secretRef: {name: gh}}\n"
        "  eventType: {header: X-GitHub-Event, prefix: github.}\n"
        "  keepHeaders: [X-GitHub-Delivery]\n"))
        + source("partner", (
            "  path: /hooks/partner\n"
            "  verify: {scheme: hmac, secretRef: {name: p, key: k}, header: X-Sig,\n"
            "           algorithm: sha512, encoding: base64, prefix: 'v1='}\n"
            "  eventType: {field: data.kind}\n"))
        + source("stripe", "  verify: {scheme: stripe, secretRef: {name: st}, tolerance: 1m}\n")
        + source("login", "  verify: {scheme: basic, secretRef: {name: creds}}\n")
        + source("kafka", "  broker: {kafka: {bootstrapServers: [k:9092], topics: [t]}}\n")
        + source("elsewhere", "  gatewayRef: {name: other}\n"
                              "  verify: {scheme: github, secretRef: {name: gh}}\n")
        + secret("gh", "{secret: \"gh-s3cret\\n\"}") + secret("p", "{k: p-s3cret}")
        + secret("st", "{secret: whsec_st}")
        + secret("creds", "{username: u, password: p}"))
    assert compiled.problems == ()
    config = compiled.config
    http = {k: v for k, v in config.sources.items() if v.path}
    assert set(http) == {"shop/github", "shop/partner", "shop/stripe", "shop/login"}
    gh = http["shop/github"]
    assert (gh.path, gh.scheme, gh.event_type_header, gh.event_type_prefix, gh.keep_headers) == (
        "/in/shop/github", "github", "X-GitHub-Event", "github.", ("X-GitHub-Delivery",))
    partner = http["shop/partner"]
    assert (partner.path, partner.header, partner.algorithm, partner.encoding, partner.prefix,
            partner.event_type_field) == ("/hooks/partner", "X-Sig", "sha512", "base64", "v1=",
                                          "data.kind")
    assert http["shop/stripe"].tolerance == 60 and gh.tolerance == 300
    assert {k: compiled.source_secrets[k] for k in http} == {
        "shop/github": {"secret": "gh-s3cret"},  # without the newline of `echo ... >`
        "shop/partner": {"secret": "p-s3cret"}, "shop/stripe": {"secret": "whsec_st"},
        "shop/login": {"username": "u", "password": "p"}}
    text = config.to_json()
    assert "s3cret" not in text and "whsec_st" not in text
    assert RoutingConfig.from_json(text) == config


@pytest.mark.parametrize(("spec", "extra", "reason_", "field"), [
    ("  verify: {scheme: github, secretRef: {name: nope}}\n", "", "SecretMissing",
     "spec.verify.secretRef"),
    ("  verify: {scheme: github, secretRef: {name: gh, key: other}}\n", "", "SecretMissing",
     "spec.verify.secretRef"),
    ("  verify: {scheme: basic, secretRef: {name: gh}}\n", "", "SecretMissing",
     "spec.verify.secretRef"),
    ("  verify: {scheme: standard-webhooks, secretRef: {name: gh}}\n", "", "SecretInvalid",
     "spec.verify.secretRef"),
    ("  verify: {scheme: github, secretRef: {name: gh}}\n  keepHeaders: [Webhook-Signature]\n",
     "", "ReservedHeader", "spec.keepHeaders"),
    ("  verify: {scheme: github, secretRef: {name: gh}}\n",  # the default /in/shop/src
     source("a-first", "  verify: {scheme: github, secretRef: {name: gh}}\n"
                       "  path: /in/shop/src\n"), "PathConflict", "spec.path"),
])
def test_source_problems(tmp_path: Path, spec: str, extra: str, reason_: str,
                         field: str) -> None:
    compiled = compile_text(tmp_path, extra + source("src", spec)
                            + secret("gh", "{secret: gh-s3cret}"))
    (problem,) = compiled.problems
    assert (problem.reason, problem.field, problem.name) == (reason_, field, "src")
    assert "shop/src" not in compiled.config.sources


def test_broker_sources_compile_with_their_secrets_apart(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, source("k", (
        "  broker: {kafka: {bootstrapServers: ['k:9092'], topics: [orders],\n"
        "           sasl: {mechanism: PLAIN, secretRef: {name: ksasl}}, tls: {}}}\n"
        "  eventType: {header: event-type, prefix: 'kafka.'}\n"
        "  idempotencyKey: {field: id}\n  keepHeaders: [trace-id]\n"))
        + source("q", "  broker: {amqp: {urlFrom: {secretKeyRef: {name: rabbit}}, queue: q}}\n")
        + source("r", "  broker: {redis: {url: 'redis://r:6379/0', stream: s}}\n")
        + source("s", "  broker: {sqs: {queueUrl: 'https://sqs.eu-west-1.amazonaws.com/1/q',\n"
                      "                 credentialsFrom: {secretRef: {name: aws}}}}\n")
        + secret("ksasl", "{username: u, password: p4ss}")
        + secret("rabbit", "{url: 'amqp://u:s3cret@rabbit/'}")
        + secret("aws", "{AWS_ACCESS_KEY_ID: AK, AWS_SECRET_ACCESS_KEY: s3cr3t}"))
    assert compiled.problems == ()
    sources = compiled.config.sources
    k = sources["shop/k"]
    assert k.broker == BrokerConfig("kafka", {
        "bootstrapServers": ["k:9092"], "topics": ["orders"], "group": "hookgate",
        "sasl": {"mechanism": "PLAIN"}, "tls": {}})
    assert (k.path, k.event_type_header, k.event_type_field, k.event_type_prefix,
            k.idempotency_field, k.keep_headers) == ("", "event-type", None, "kafka.", "id",
                                                     ("trace-id",))
    assert sources["shop/q"].event_type_field == "type"  # the default: the payload's type
    assert compiled.source_secrets["shop/k"] == {"username": "u", "password": "p4ss"}
    assert compiled.source_secrets["shop/q"] == {"url": "amqp://u:s3cret@rabbit/"}
    assert compiled.source_secrets["shop/r"] == {}
    assert compiled.source_secrets["shop/s"] == {"AWS_ACCESS_KEY_ID": "AK",
                                                 "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    text = compiled.config.to_json()
    assert "s3cret" not in text and "p4ss" not in text and "s3cr3t" not in text
    assert RoutingConfig.from_json(text) == compiled.config


def test_a_broker_source_without_its_secret_is_a_problem(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, source(
        "q", "  broker: {amqp: {urlFrom: {secretKeyRef: {name: nope}}, queue: q}}\n"))
    (problem,) = compiled.problems
    assert (problem.reason, problem.field) == ("SecretMissing", "spec.broker.amqp.urlFrom")
    assert "shop/q" not in compiled.config.sources
