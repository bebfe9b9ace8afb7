"""The operator on a real API server: examples in, deliverer pools out, and a deliverer
process (run locally, as there is no kubelet) that delivers from the published config."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from hookgate.deliverer.queues.base import Event
from hookgate.deliverer.queues.factory import open_queue
from hookgate.model.publication import Manifest, unpack
from tests.support.ports import unused_port
from tests.support.process import terminate
from tests.support.receiver import Recorder
from tests.support.waiting import wait_for

from .kubeutil import Kube, unique_name

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_SECRET = "whsec_aG9va2dhdGUgZXhhbXBsZSBzZWNyZXQh"
GROUP = "hookgate.io/v1alpha1"


@pytest.fixture(scope="module")
def crds(kube: Kube) -> Kube:
    kube.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(ROOT / "crds"))
    return kube


@pytest.fixture
def ns(crds: Kube) -> Iterator[str]:
    name = unique_name("hg-op")
    crds.kubectl("create", "namespace", name)
    yield name
    crds.kubectl("delete", "namespace", name, "--wait=false", check=False)


class Operator:
    def __init__(self, kube: Kube, namespace: str, log: Path) -> None:
        self.log = log
        self.metrics_url = f"http://127.0.0.1:{unused_port()}/metrics"
        # --kubeconfig, as documented, and no $KUBECONFIG: the flag alone must do
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hookgate",
                    "operator",
                    "--kubeconfig",
                    str(kube.kubeconfig),
                    "--namespace",
                    namespace,
                    "--liveness",
                    f"127.0.0.1:{unused_port()}",
                    "--readiness",
                    f"127.0.0.1:{unused_port()}",
                    "--log-format",
                    "text",
                    "--metrics",
                    self.metrics_url.split("/")[2],
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def stop(self) -> None:
        terminate(self.proc, 20)


@pytest.fixture
def operator(crds: Kube, ns: str, tmp_path: Path) -> Iterator[Operator]:
    op = Operator(crds, ns, tmp_path / "operator.log")
    yield op
    op.stop()
    print(op.log.read_text()[-5000:])


def apply(kube: Kube, ns: str, *docs: dict[str, Any] | str) -> None:
    text = "\n---\n".join(d if isinstance(d, str) else yaml.safe_dump(d) for d in docs)
    kube.kubectl("apply", "-n", ns, "-f", "-", input=text)


def get(kube: Kube, ns: str, kind: str, name: str) -> dict[str, Any] | None:
    out = kube.kubectl("get", "-n", ns, kind, name, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


async def until(probe: Any, what: str, timeout: float = 60) -> Any:
    """:func:`wait_for` on a blocking ``probe`` (kubectl), run in a thread."""
    return await wait_for(lambda: asyncio.to_thread(probe), timeout=timeout, what=what,
                          interval=0.2)


def published(kube: Kube, ns: str, gateway: str = "default"
              ) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The routing and keys documents the operator published for ``gateway``, read as a
    deliverer reads them (manifest, then shards); None while there is none."""
    cm = get(kube, ns, "configmap", f"hookgate-{gateway}-config")
    if cm is None:
        return None
    manifest = Manifest.from_json(cm["data"]["manifest.json"])
    routing, keys = [], []
    for name in manifest.routing_shards:
        shard = get(kube, ns, "configmap", name)
        if shard is None:
            return None  # superseded meanwhile
        routing.append(base64.b64decode(shard["binaryData"]["routing.json.gz"]))
    for name in manifest.keys_shards:
        shard = get(kube, ns, "secret", name)
        if shard is None:
            return None
        keys.append(base64.b64decode(shard["data"]["keys.json.gz"]))
    return (json.loads(unpack(manifest.routing_digest, routing)),
            json.loads(unpack(manifest.keys_digest, keys)))


def ready(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions", []):
        if c["type"] == "Ready":
            return dict(c)
    return None


def examples(redis_url: str) -> str:
    """The examples, with the Redis Secret pointing at the test's Redis on loopback."""
    text = "\n---\n".join(
        (ROOT / "examples" / f).read_text()
        for f in ("gateway.yaml", "endpoints.yaml", "subscriptions.yaml", "sources.yaml")
    )
    secrets = [d for d in yaml.safe_load_all((ROOT / "examples" / "secrets.yaml").read_text()) if d]
    for s in secrets:
        if s["metadata"]["name"] == "redis":
            s["stringData"]["url"] = redis_url
    return text + "\n---\n" + "\n---\n".join(yaml.safe_dump(s) for s in secrets)


CHILDREN = [
    ("configmap", "hookgate-default-config"),
    ("deployment", "hookgate-default"),
    ("service", "hookgate-default"),
    ("poddisruptionbudget", "hookgate-default"),
    ("serviceaccount", "hookgate-default-deliverer"),
    ("role", "hookgate-default-deliverer"),
    ("rolebinding", "hookgate-default-deliverer"),
]


async def test_examples_become_a_ready_deliverer_pool(
    crds: Kube, ns: str, operator: Operator, redis_url: str
) -> None:
    apply(crds, ns, examples(redis_url))
    gateway = await until(
        lambda: (
            (g := get(crds, ns, "webhookgateway", "default"))
            and (ready(g) or {}).get("status") == "True"
            and g
        ),
        "the gateway to be Ready",
    )
    uid = gateway["metadata"]["uid"]
    for kind, name in CHILDREN:
        child = await until(lambda k=kind, n=name: get(crds, ns, k, n), f"{kind} {name}")
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("WebhookGateway", uid)
    deployment = get(crds, ns, "deployment", "hookgate-default")
    assert deployment is not None and deployment["spec"]["replicas"] == 1
    # The controller-manager turns the Deployment into a ReplicaSet.
    await until(
        lambda: crds.kubectl(
            "get", "-n", ns, "replicaset", "-l", "hookgate.io/gateway=default", "-o", "name"
        ).stdout.strip(),
        "a ReplicaSet for the deliverers",
    )
    # The endpoint without secretRef got a generated, owned Secret, named in its status.
    audit = await until(
        lambda: (
            (e := get(crds, ns, "webhookendpoint", "audit"))
            and (e.get("status") or {}).get("secretName")
            and e
        ),
        "the audit endpoint's generated secret",
    )
    secret = get(crds, ns, "secret", audit["status"]["secretName"])
    assert secret is not None
    assert base64.b64decode(secret["data"]["secret"]).decode().startswith("whsec_")
    assert secret["metadata"]["ownerReferences"][0]["uid"] == audit["metadata"]["uid"]
    # kubectl wait works on our conditions.
    for kind in ("webhookendpoint/local-receiver", "subscription/orders", "webhookgateway/default"):
        crds.kubectl("wait", "-n", ns, "--for=condition=Ready", "--timeout=60s", kind)
    status = get(crds, ns, "webhookgateway", "default")["status"]  # type: ignore[index]
    assert (status["endpoints"], status["subscriptions"], status["desiredReplicas"]) == (2, 3, 1)
    assert status["selector"] == "app.kubernetes.io/name=hookgate,hookgate.io/gateway=default"
    manifest = get(crds, ns, "configmap", "hookgate-default-config")
    assert manifest is not None and "whsec_" not in json.dumps(manifest["data"])
    documents = published(crds, ns)
    assert documents is not None
    routing, keys = documents
    assert "whsec_" not in json.dumps(routing) and "whsec_" in json.dumps(keys)


def service_account_kubeconfig(kube: Kube, ns: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as ``account``: the deliverer's own identity."""
    token = kube.kubectl("create", "token", "-n", ns, account, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    cluster = admin["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "deliverer",
                        "context": {"cluster": cluster["name"], "user": account, "namespace": ns},
                    }
                ],
                "current-context": "deliverer",
            }
        )
    )
    return path


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hookgate", *args], stdout=out, stderr=subprocess.STDOUT
        )


def sink(url: str, event_types: list[str]) -> list[dict[str, Any]]:
    """An endpoint on the test's loopback receiver and its subscription."""
    return [{"apiVersion": GROUP, "kind": "WebhookEndpoint", "metadata": {"name": "sink"},
             "spec": {"url": url, "secretRef": {"name": "local-receiver-signing"},
                      "retry": {"schedule": ["0s", "1s"]}}},
            {"apiVersion": GROUP, "kind": "Subscription", "metadata": {"name": "to-sink"},
             "spec": {"endpointRef": {"name": "sink"}, "eventTypes": event_types}}]


async def test_local_deliverer_delivers_and_follows_config_changes(
    crds: Kube, ns: str, operator: Operator, redis_url: str, receiver: Recorder, tmp_path: Path
) -> None:
    apply(crds, ns, examples(redis_url), *sink(receiver.url("/sink"), ["order.*"]))
    # The receiver is on loopback, which a cluster gateway refuses unless allowed.
    crds.kubectl("patch", "-n", ns, "webhookgateway", "default", "--type=merge", "-p",
                 '{"spec": {"network": {"allowCIDRs": ["127.0.0.0/8"]}}}')
    await until(
        lambda: (ready(get(crds, ns, "webhookendpoint", "sink")) or {}).get("status") == "True",
        "the sink endpoint to be Ready",
    )
    kubeconfig = service_account_kubeconfig(
        crds, ns, "hookgate-default-deliverer", tmp_path / "deliverer.kubeconfig"
    )
    port = unused_port()  # on the deliverer's command line
    log = tmp_path / "deliverer.log"
    proc = spawn(["deliverer", "--gateway", f"{ns}/default", "--queue", redis_url,
                  "--listen", f"127.0.0.1:{port}", "--kubeconfig", str(kubeconfig),
                  "--log-format", "text", "--grace", "2"], log)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def readyz() -> dict[str, Any] | None:
                assert proc.poll() is None, log.read_text()
                try:
                    async with http.get(url + "/readyz") as resp:
                        return dict(await resp.json()) if resp.status == 200 else None
                except aiohttp.ClientError:
                    return None

            async def allowed() -> dict[str, Any] | None:
                # The allowCIDRs patch may land after the deliverer's first read.
                now = await readyz()
                config = (published(crds, ns) or ({}, {}))[0]
                return now if "127.0.0.0/8" in config.get("allowCIDRs", []) else None

            await wait_for(allowed, timeout=30, what="the deliverer to be ready")

            async def send(event_type: str) -> str:
                async with http.post(url + "/v1/events",
                                     json={"type": event_type, "data": {}}) as resp:
                    assert resp.status == 202, await resp.text()
                    return str((await resp.json())["id"])

            event_id = await send("order.created")
            (got,) = await receiver.wait_for(lambda r: len(r) >= 1, timeout=30)
            assert got.webhook_id == event_id, log.read_text()[-3000:]
            Webhook(EXAMPLE_SECRET).verify(got.body, got.headers)

            # Resubscribe the sink to shipments; the deliverer must pick it up live.
            first = await readyz()
            assert first is not None
            changed_at = time.monotonic()
            apply(crds, ns, sink(receiver.url("/sink"), ["shipment.*"])[1])

            async def reloaded() -> bool:
                now = await readyz()
                return bool(now and now["config"] > first["config"])

            await wait_for(reloaded, timeout=30, what="the deliverer to apply the change")
            seconds = time.monotonic() - changed_at
            print(f"config change reached the deliverer in {seconds:.2f}s")
            await send("order.created")  # no longer routed to the sink
            await send("shipment.sent")
            got2 = await receiver.wait_for(lambda r: len(r) >= 2, timeout=30)
            assert [json.loads(r.body)["type"] for r in got2] == ["order.created",
                                                                  "shipment.sent"]

            # Rotate the signing secret by editing its Secret: first both values sign, then
            # only the new one; running deliverers switch without a restart.
            new = "whsec_cm90YXRlZCBzaWduaW5nIHNlY3JldCE="

            async def rotate(value: str) -> list[Any]:
                before = await readyz()
                assert before is not None
                crds.kubectl("patch", "-n", ns, "secret", "local-receiver-signing",
                             "--type=merge", "-p", json.dumps({"stringData": {"secret": value}}))

                async def switched() -> bool:
                    now = await readyz()
                    return bool(now and now["config"] > before["config"])

                await wait_for(switched, timeout=30, what="the deliverer to load the new keys")
                count = len(receiver.received)
                await send("shipment.sent")
                return (await receiver.wait_for(lambda r: len(r) > count, timeout=30))[-1:]

            (both,) = await rotate(f"{new} {EXAMPLE_SECRET}")
            Webhook(new).verify(both.body, both.headers)
            Webhook(EXAMPLE_SECRET).verify(both.body, both.headers)
            (only_new,) = await rotate(new)
            Webhook(new).verify(only_new.body, only_new.headers)
            with pytest.raises(WebhookVerificationError):
                Webhook(EXAMPLE_SECRET).verify(only_new.body, only_new.headers)
    finally:
        proc.terminate()
        proc.wait(30)


async def test_invalid_objects_report_ready_false_with_a_reason(
    crds: Kube, ns: str, operator: Operator, redis_url: str
) -> None:
    apply(
        crds,
        ns,
        examples(redis_url),
        {
            "apiVersion": GROUP,
            "kind": "Subscription",
            "metadata": {"name": "dangling"},
            "spec": {"endpointRef": {"name": "nowhere"}, "eventTypes": ["*"]},
        },
        {
            "apiVersion": GROUP,
            "kind": "WebhookEndpoint",
            "metadata": {"name": "unsigned"},
            "spec": {"url": "https://unsigned.example/", "secretRef": {"name": "missing"}},
        },
    )
    dangling = await until(
        lambda: ready(get(crds, ns, "subscription", "dangling")),
        "the dangling subscription's condition",
    )
    assert (dangling["status"], dangling["reason"]) == ("False", "EndpointNotFound")
    assert "nowhere" in dangling["message"]
    unsigned = await until(
        lambda: ready(get(crds, ns, "webhookendpoint", "unsigned")),
        "the unsigned endpoint's condition",
    )
    assert (unsigned["status"], unsigned["reason"]) == ("False", "SecretMissing")

    def degraded() -> dict[str, Any] | None:
        gw = get(crds, ns, "webhookgateway", "default") or {}
        return next(
            (
                c
                for c in gw.get("status", {}).get("conditions", [])
                if c["type"] == "Degraded" and c["status"] == "True"
            ),
            None,
        )

    condition = await until(degraded, "the gateway to be Degraded")
    assert "Subscription" in condition["message"]
    # Fixing the object clears the condition.
    apply(
        crds,
        ns,
        {
            "apiVersion": GROUP,
            "kind": "Subscription",
            "metadata": {"name": "dangling"},
            "spec": {"endpointRef": {"name": "audit"}, "eventTypes": ["*"]},
        },
    )
    await until(
        lambda: (ready(get(crds, ns, "subscription", "dangling")) or {}).get("status") == "True",
        "the fixed subscription to be Ready",
    )
    assert operator.proc.poll() is None
    assert "Traceback" not in operator.log.read_text()


async def test_hand_deleted_children_are_restored_and_gateway_deletion_collects_them(
    crds: Kube, ns: str, operator: Operator, redis_url: str
) -> None:
    apply(crds, ns, examples(redis_url))
    await until(
        lambda: get(crds, ns, "configmap", "hookgate-default-config"), "the published ConfigMap"
    )
    crds.kubectl("delete", "-n", ns, "configmap", "hookgate-default-config")
    crds.kubectl("delete", "-n", ns, "role", "hookgate-default-deliverer")
    await until(
        lambda: (
            get(crds, ns, "configmap", "hookgate-default-config")
            and get(crds, ns, "role", "hookgate-default-deliverer")
        ),
        "the deleted children to be restored",
    )
    crds.kubectl("delete", "-n", ns, "webhookgateway", "default")
    for kind, name in CHILDREN:
        await until(
            lambda k=kind, n=name: get(crds, ns, k, n) is None,
            f"{kind} {name} to be garbage-collected",
        )


async def test_backlog_scales_the_deployment_up_then_down(
    crds: Kube, ns: str, operator: Operator, redis_url: str
) -> None:
    gateway = {
        "apiVersion": GROUP,
        "kind": "WebhookGateway",
        "metadata": {"name": "default"},
        "spec": {
            "queue": {"redis": {"url": redis_url}},
            "autoscaling": {
                "mode": "Builtin",
                "minReplicas": 1,
                "maxReplicas": 8,
                "targetBacklogPerReplica": 10,
                "pollingIntervalSeconds": 1,
                "scaleDownStabilizationSeconds": 3,
            },
        },
    }
    apply(crds, ns, gateway)

    def replicas() -> int:
        d = get(crds, ns, "deployment", "hookgate-default") or {}
        return int(d.get("spec", {}).get("replicas", -1))

    await until(lambda: replicas() == 1, "the deployment at 1 replica")
    queue = open_queue(redis_url, gateway=f"{ns}/default")
    await queue.open()
    try:
        for i in range(55):  # 55 ready deliveries, target 10 per replica: 6 replicas
            body = json.dumps({"type": "t", "timestamp": "x", "data": i}).encode()
            await queue.enqueue(Event(f"evt_{i}", "t", body, time.time()), [f"{ns}/ep"])
        await until(lambda: replicas() == 6, "scale-up to 6 replicas", timeout=60)
        # The backlog may be read while it still grows (1 -> 3 -> 6, say); each step up is
        # an Event on the gateway, posted shortly after the change.
        def scaled_events() -> list[str]:
            items = json.loads(crds.kubectl("get", "events", "-n", ns, "-o", "json").stdout)
            return [e["message"] for e in items["items"] if e.get("reason") == "Scaled"]

        messages = await until(lambda: (m := scaled_events()) and any(
            "to 6 replicas" in x for x in m) and m, "a Scaled event up to 6 replicas")
        assert all(x.startswith("scaled up from ") for x in messages), messages
        drained = 0
        while drained < 55:
            for d in await queue.fetch(55, wait=1):
                await queue.complete(d, _attempt(d.endpoint))
                drained += 1
        await until(lambda: replicas() == 1, "scale-down after the window", timeout=60)
    finally:
        await queue.close()


def _attempt(endpoint: str) -> Any:
    from hookgate.deliverer.queues.base import Attempt

    return Attempt(
        endpoint=endpoint,
        attempt=1,
        at=time.time(),
        duration=0.01,
        status=204,
        error=None,
        outcome="success",
    )


async def test_scale_subresource_sets_replicas_when_autoscaling_is_disabled(
    crds: Kube, ns: str, operator: Operator, redis_url: str
) -> None:
    apply(
        crds,
        ns,
        {
            "apiVersion": GROUP,
            "kind": "WebhookGateway",
            "metadata": {"name": "default"},
            "spec": {
                "queue": {"redis": {"url": redis_url}},
                "autoscaling": {"mode": "Disabled"},
                "replicas": 1,
            },
        },
    )
    await until(lambda: get(crds, ns, "deployment", "hookgate-default"), "the deployment")
    crds.kubectl("scale", "-n", ns, "webhookgateway/default", "--replicas=3")
    await until(
        lambda: (
            (get(crds, ns, "deployment", "hookgate-default") or {}).get("spec", {}).get("replicas")
            == 3
        ),
        "3 replicas after kubectl scale",
    )


async def test_keda_mode_without_keda_says_so(
    crds: Kube, ns: str, operator: Operator, redis_url: str
) -> None:
    apply(
        crds,
        ns,
        {
            "apiVersion": GROUP,
            "kind": "WebhookGateway",
            "metadata": {"name": "default"},
            "spec": {"queue": {"redis": {"url": redis_url}}, "autoscaling": {"mode": "KEDA"}},
        },
    )
    condition = await until(
        lambda: ready(get(crds, ns, "webhookgateway", "default")), "the gateway's condition"
    )
    assert (condition["status"], condition["reason"]) == ("False", "KEDANotInstalled")


#: KEDA's own CRDs (tests/e2e/keda/README.md): the API server then checks what the operator
#: emits against KEDA's schema. KEDA's controller is not needed to check what is asked of it.
KEDA_CRDS = Path(__file__).parent / "keda"


async def test_keda_mode_builds_its_trigger_from_a_url_kept_in_a_secret(
        crds: Kube, ns: str, operator: Operator, redis_sentinel_tls_url: str) -> None:
    """A TLS Sentinel URL with an ACL user and a Sentinel password, in a Secret: the operator
    reads it, emits KEDA's Sentinel scaler and keeps the passwords in Secret references."""
    for crd in sorted(KEDA_CRDS.glob("*.yaml")):
        crds.kubectl("apply", "--server-side", "-f", str(crd))
    try:
        crds.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                     "crd/scaledobjects.keda.sh", "crd/triggerauthentications.keda.sh")
        apply(crds, ns, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis"},
                         "stringData": {"url": redis_sentinel_tls_url}},
              {"apiVersion": GROUP, "kind": "WebhookGateway", "metadata": {"name": "default"},
               "spec": {"queue": {"redis": {"urlFrom": {"secretKeyRef": {
                            "name": "redis", "key": "url"}}}},
                        "autoscaling": {"mode": "KEDA", "maxReplicas": 12,
                                        "targetBacklogPerReplica": 40}}})
        scaled = await until(lambda: get(crds, ns, "scaledobject", "hookgate-default"),
                             "the ScaledObject")
        assert scaled["spec"]["scaleTargetRef"] == {"name": "hookgate-default"}
        assert scaled["spec"]["maxReplicaCount"] == 12
        (trigger,) = scaled["spec"]["triggers"]
        assert (trigger["type"], trigger["metadata"]["lagCount"]) == (
            "redis-sentinel-streams", "40")
        assert trigger["metadata"]["sentinelMaster"] == "hookgate"
        assert trigger["metadata"]["enableTLS"] == "true"
        assert trigger["metadata"]["stream"] == f"hookgate:{{{ns}/default}}:deliveries"
        assert trigger["authenticationRef"] == {"name": "hookgate-default-redis-auth"}
        assert "s3cret" not in json.dumps(scaled) and "sentinel-p" not in json.dumps(scaled)
        auth = get(crds, ns, "triggerauthentication", "hookgate-default-redis-auth")
        assert auth is not None
        assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {
            "username", "password", "sentinelPassword"}
        secret = get(crds, ns, "secret", "hookgate-default-redis-auth")
        assert secret is not None
        assert base64.b64decode(secret["data"]["password"]) == b"s3cret-p@ss"
        condition = await until(lambda: (c := ready(get(crds, ns, "webhookgateway", "default")))
                                and c["status"] == "True" and c, "the gateway to be Ready")
        assert condition["reason"] == "Reconciled"
        # Leaving KEDA mode: KEDA's objects go (its HPA would fight the operator's scaling).
        crds.kubectl("patch", "-n", ns, "webhookgateway", "default", "--type=merge", "-p",
                     json.dumps({"spec": {"autoscaling": {"mode": "Builtin"}}}))
        for kind, name in (("scaledobject", "hookgate-default"),
                           ("triggerauthentication", "hookgate-default-redis-auth"),
                           ("secret", "hookgate-default-redis-auth")):
            await until(lambda k=kind, n=name: get(crds, ns, k, n) is None,
                        f"{kind} {name} to be deleted after leaving KEDA mode")
    finally:
        crds.kubectl("delete", "crd", "scaledobjects.keda.sh",
                     "triggerauthentications.keda.sh", "--wait=false", check=False)


# --- cost: what the operator asks of the API server -------------------------------------


async def scrape(op: Operator) -> dict[str, float]:
    """The operator's counters: ``name`` summed over labels, and ``name{labels}`` each."""
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as http, http.get(op.metrics_url) as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_total"):
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[s.name] = out.get(s.name, 0) + s.value
                out[f"{s.name}{{{labels}}}"] = s.value
    return out


REQUESTS = "hookgate_operator_api_requests_total"
POLLS = "hookgate_operator_backlog_polls_total"


async def polls_later(op: Operator, after: dict[str, float], polls: int) -> dict[str, float]:
    """The counters once the backlog has been polled ``polls`` more times."""
    result: dict[str, float] = await wait_for(
        lambda: _at_least(op, POLLS, after.get(POLLS, 0) + polls), timeout=60,
        what=f"{polls} more backlog polls", interval=0.2, ignoring=(aiohttp.ClientError,))
    return result


async def _at_least(op: Operator, name: str, value: float) -> Any:
    now = await scrape(op)
    return now if now.get(name, 0) >= value else None


def fast_polling(text: str) -> str:
    """The examples, with the gateway's backlog polled every second."""
    docs = [d for d in yaml.safe_load_all(text) if d]
    for d in docs:
        if d["kind"] == "WebhookGateway":
            d["spec"]["autoscaling"]["pollingIntervalSeconds"] = 1
    return "\n---\n".join(yaml.safe_dump(d) for d in docs)


async def settled(crds: Kube, ns: str, op: Operator) -> dict[str, float]:
    """Wait until the examples are Ready and a backlog poll went by without a request."""
    for kind in ("webhookgateway/default", "webhookendpoint/local-receiver",
                 "subscription/orders"):
        await until(lambda k=kind: (ready(get(crds, ns, *k.split("/"))) or {}).get("status")
                    == "True", f"{kind} to be Ready")

    async def quiet() -> Any:
        before = await polls_later(op, {}, 0)
        after = await polls_later(op, before, 2)
        return after if after.get(REQUESTS) == before.get(REQUESTS) else None

    result: dict[str, float] = await wait_for(quiet, timeout=60,
                                              what="a backlog poll without API requests")
    return result


async def test_an_idle_operator_only_polls_the_backlog_and_a_change_needs_no_list(
    crds: Kube, ns: str, operator: Operator, redis_url: str
) -> None:
    apply(crds, ns, fast_polling(examples(redis_url)))
    start = await settled(crds, ns, operator)
    started_at = time.monotonic()
    idle = await polls_later(operator, start, 5)
    seconds = time.monotonic() - started_at
    requests = idle[REQUESTS] - start[REQUESTS]
    print(f"idle: {requests:g} API requests in {seconds:.1f}s and "
          f"{idle[POLLS] - start[POLLS]:g} backlog polls")
    assert requests == 0, {k: v for k, v in idle.items() if k.startswith(REQUESTS)}
    gateway = get(crds, ns, "webhookgateway", "default")
    assert gateway is not None and gateway["status"]["backlog"] == 0  # the poll read it

    # A changed Subscription reaches the published config from the watch, with no list.
    def routing() -> dict[str, Any] | None:
        documents = published(crds, ns)
        return documents[0] if documents else None

    old = routing()
    orders = get(crds, ns, "subscription", "orders")
    assert orders is not None
    orders["spec"]["eventTypes"] = ["refund.issued.v2"]
    apply(crds, ns, {k: orders[k] for k in ("apiVersion", "kind", "spec")}
          | {"metadata": {"name": "orders"}})
    new = await until(lambda: (r := routing()) != old and r, "the change to be published")
    assert "refund.issued.v2" in json.dumps(new)
    after = await scrape(operator)
    # (Deleting the shards of old versions lists those of this gateway, by label.)
    lists = {k: after[k] - idle.get(k, 0) for k in after
             if k.startswith(REQUESTS + "{") and "verb=LIST" in k
             and "resource=configmaps," not in k and "resource=secrets," not in k}
    assert not any(lists.values()), lists
    assert after["hookgate_operator_publishes_total"] > idle["hookgate_operator_publishes_total"]


async def test_a_cold_start_publishes_once_with_every_object(
    crds: Kube, ns: str, redis_url: str, tmp_path: Path
) -> None:
    # Objects first, the operator after: its watches list them all before the first publish.
    count = 60
    docs: list[dict[str, Any] | str] = [examples(redis_url)]
    for i in range(count):
        docs += [{"apiVersion": GROUP, "kind": "WebhookEndpoint", "metadata": {"name": f"ep-{i}"},
                  "spec": {"url": f"https://ep-{i}.example/"}},
                 {"apiVersion": GROUP, "kind": "Subscription", "metadata": {"name": f"sub-{i}"},
                  "spec": {"endpointRef": {"name": f"ep-{i}"}, "eventTypes": [f"t{i}.*"]}}]
    apply(crds, ns, *docs)
    op = Operator(crds, ns, tmp_path / "operator.log")
    try:
        await until(lambda: (ready(get(crds, ns, "webhookgateway", "default")) or {}).get(
            "status") == "True", "the gateway to be Ready")
        documents = published(crds, ns)
        assert documents is not None
        endpoints = json.dumps(documents[0])
        assert sum(f'"{ns}/ep-{i}"' in endpoints for i in range(count)) == count
        metrics = await wait_for(lambda: scrape(op), timeout=30, what="the operator's metrics",
                                 interval=0.2, ignoring=(aiohttp.ClientError,))
        # One publish: none before the cache held everything, none for the generated
        # Secrets or for the statuses written after it.
        assert metrics["hookgate_operator_publishes_total"] == 1, metrics
    finally:
        op.stop()


SCALE = 5000  # endpoints and subscriptions: more than one ConfigMap could hold unsharded


def create_all(kube: Kube, ns: str, docs: list[dict[str, Any]]) -> None:
    """Create many objects fast: the API's own client, a few requests at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from kubernetes.client import CustomObjectsApi

    api = CustomObjectsApi(kube.api_client)
    plurals = {"WebhookEndpoint": "webhookendpoints", "Subscription": "subscriptions"}

    def create(doc: dict[str, Any]) -> None:
        api.create_namespaced_custom_object("hookgate.io", "v1alpha1", ns,
                                            plurals[doc["kind"]], doc)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, docs))


@pytest.mark.timeout(600)
async def test_5000_endpoints_are_published_and_the_last_subscription_delivers(
    crds: Kube, ns: str, redis_url: str, receiver: Recorder, tmp_path: Path
) -> None:
    docs: list[dict[str, Any]] = []
    for i in range(SCALE):
        docs.append({"apiVersion": GROUP, "kind": "WebhookEndpoint",
                     "metadata": {"name": f"scale-{i}"},
                     "spec": {"url": receiver.url(f"/scale-{i}"),
                              "secretRef": {"name": "local-receiver-signing"},
                              "retry": {"schedule": ["0s", "1s"]}}})
        docs.append({"apiVersion": GROUP, "kind": "Subscription",
                     "metadata": {"name": f"scale-{i}"},
                     "spec": {"endpointRef": {"name": f"scale-{i}"},
                              "eventTypes": [f"scale.{i}"],
                              # half with a CEL filter, as platforms use them
                              **({"filter": f"data.n == {i}"} if i % 2 else {})}})
    started = time.monotonic()
    await asyncio.to_thread(create_all, crds, ns, docs)
    print(f"created {len(docs)} objects in {time.monotonic() - started:.1f}s")
    example = [d for d in yaml.safe_load_all(examples(redis_url)) if d]
    for doc in example:
        if doc["kind"] == "WebhookGateway":
            doc["spec"]["network"] = {"allowCIDRs": ["127.0.0.0/8"]}
    apply(crds, ns, *example)
    # The operator starts on a namespace that holds them all, as after a restart or an
    # upgrade: its first publish must carry every endpoint.
    operator = Operator(crds, ns, tmp_path / "operator.log")
    started = time.monotonic()
    proc: subprocess.Popen[bytes] | None = None
    try:
        def all_published() -> bool:
            documents = published(crds, ns)
            return bool(documents and sum(e["key"].startswith(f"{ns}/scale-")
                                          for e in documents[0]["endpoints"]) == SCALE)

        await until(all_published, f"the config of {SCALE} endpoints to be published",
                    timeout=300)
        print(f"published {time.monotonic() - started:.1f}s after the operator started")
        await until(lambda: (get(crds, ns, "webhookgateway", "default") or {}).get(
            "status", {}).get("endpoints", 0) >= SCALE and (ready(get(
                crds, ns, "webhookgateway", "default")) or {}).get("status") == "True",
            "the gateway to be Ready and count every endpoint", timeout=300)
        print(f"gateway Ready {time.monotonic() - started:.1f}s after the operator started")

        kubeconfig = service_account_kubeconfig(
            crds, ns, "hookgate-default-deliverer", tmp_path / "deliverer.kubeconfig")
        port = unused_port()
        log = tmp_path / "deliverer.log"
        proc = spawn(["deliverer", "--gateway", f"{ns}/default", "--queue", redis_url,
                      "--listen", f"127.0.0.1:{port}", "--kubeconfig", str(kubeconfig),
                      "--log-format", "text", "--grace", "2"], log)
        running = proc
        async with aiohttp.ClientSession() as http:
            async def readyz() -> bool:
                assert running.poll() is None, log.read_text()
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(readyz, timeout=60, what="the deliverer to be ready")
            last = SCALE - 1
            async with http.post(f"http://127.0.0.1:{port}/v1/events",
                                 json={"type": f"scale.{last}", "data": {"n": last}}) as resp:
                assert resp.status == 202, await resp.text()
                event_id = (await resp.json())["id"]
        (got,) = await receiver.wait_for(lambda r: len(r) >= 1, timeout=60)
        assert got.path == f"/scale-{last}" and got.webhook_id == event_id
        Webhook(EXAMPLE_SECRET).verify(got.body, got.headers)
    finally:
        if proc is not None:
            terminate(proc)
        operator.stop()
        print(operator.log.read_text()[-3000:])
