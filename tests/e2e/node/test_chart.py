"""The chart on the real node, as a user installs it: `helm install` with the image built
from the Dockerfile, in a namespace that enforces the `restricted` Pod Security Standard.

The operator runs in its pod, with the chart's own service account (a namespaced install:
a Role, no ClusterRole), reconciles examples/ and starts deliverer pods that take events
by pod IP (there is no kube-proxy) and deliver them, signed, to a receiver on the host
side of the node's link. Their queue is a redis-server on that address too.

One install and one gateway serve the module's tests, which run in file order and build on
each other: a helm install and a first rollout cost tens of seconds here.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from standardwebhooks.webhooks import Webhook

from tests.support.ci import unavailable
from tests.support.redis_server import RedisServer
from tests.support.waiting import WaitTimeout, wait_for_blocking

from ..kubeutil import Kube, unique_name
from ..test_helm import Helm, get, ready
from .conftest import Node
from .hostside import HostReceiver, host_redis

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "hookgate"
EXAMPLES = ROOT / "examples"
EXAMPLE_SECRET = "whsec_aG9va2dhdGUgZXhhbXBsZSBzZWNyZXQh"  # examples/secrets.yaml
DELIVERERS = "app.kubernetes.io/component=deliverer,hookgate.io/gateway=default"
OPERATOR = "app.kubernetes.io/component=operator"


@pytest.fixture(scope="module")
def helm(kube: Kube) -> Helm:
    binary = kube.bin_dir / "helm" if kube.bin_dir else None
    if binary is None or not binary.exists():
        unavailable("helm not found (run hack/k8s/build)")
    return Helm(kube, str(binary))


@pytest.fixture(scope="module")
def restricted(kube: Kube, node: Node) -> Iterator[str]:
    """A namespace that refuses pods below the `restricted` Pod Security Standard."""
    name = unique_name("hg-node")
    kube.kubectl("create", "namespace", name)
    kube.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted",
                 "pod-security.kubernetes.io/enforce-version=latest")
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def redis(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = host_redis(node.host_ip, tmp_path_factory.mktemp("node-redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def receiver(node: Node) -> Iterator[HostReceiver]:
    with HostReceiver(node.host_ip) as rec:
        yield rec


@pytest.fixture(scope="module")
def release(kube: Kube, node: Node, helm: Helm, restricted: str) -> Iterator[str]:
    """The chart, namespaced to `restricted`, with the node's image (never pulled)."""
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(ROOT / "crds"))
    repository, _, tag = node.image.rpartition(":")
    name = unique_name("hg")
    started = time.monotonic()
    helm("install", name, str(CHART), "-n", restricted, "--set", "crds.install=false",
         "--set", f"watchNamespaces={{{restricted}}}", "--set", f"image.repository={repository}",
         "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
         "--wait", "--timeout", "180s", timeout=200)
    print(f"\nhelm install --wait: operator Ready in {time.monotonic() - started:.1f}s")
    yield name
    helm("uninstall", name, "-n", restricted, "--wait=false", check=False)


def examples(redis_url: str, receiver_url: str, host_ip: str) -> str:
    """examples/ as they are, with the queue, the receivers and the egress allowance made
    to point at the host side of the node's link."""
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            kind, name = doc["kind"], doc["metadata"]["name"]
            if kind == "Secret" and name == "redis":
                doc["stringData"]["url"] = redis_url
            if kind == "WebhookEndpoint":
                doc["spec"]["url"] = doc["spec"]["url"].replace("http://127.0.0.1:9000",
                                                                receiver_url)
            if kind == "WebhookGateway":
                # The receiver is on a private address: the SSRF guard must be told.
                doc["spec"]["network"] = {"allowCIDRs": [f"{host_ip}/32"]}
            docs.append(doc)
    return yaml.safe_dump_all(docs)


@pytest.fixture(scope="module")
def gateway(kube: Kube, node: Node, release: str, restricted: str, redis: RedisServer,
            receiver: HostReceiver) -> str:
    """examples/ applied in the namespace, reconciled by the operator in its pod."""
    url = f"redis://{node.host_ip}:{redis.port}/0"
    kube.kubectl("apply", "-n", restricted, "-f", "-",
                 input=examples(url, receiver.url, node.host_ip))
    return "default"


def pods(kube: Kube, namespace: str, selector: str) -> list[dict[str, Any]]:
    out = kube.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod.get("status") or {}).get("conditions", []))


def ready_deliverers(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    return [p for p in pods(kube, namespace, DELIVERERS) if pod_ready(p)]


def wait_for_deliverers(kube: Kube, namespace: str, timeout: float = 120
                        ) -> list[dict[str, Any]]:
    """Ready deliverer pods; on a timeout, the namespace's events say why there are none."""
    try:
        return wait_for_blocking(lambda: ready_deliverers(kube, namespace), timeout=timeout,
                                 interval=0.5, what="a Ready deliverer pod")
    except WaitTimeout as exc:
        events = kube.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp",
                              check=False).stdout
        logs = kube.kubectl("logs", "-n", namespace, "-l", DELIVERERS, "--tail=30",
                            "--prefix", check=False)
        raise AssertionError(f"{exc}\nevents in {namespace}:\n{events[-6000:]}\n"
                             f"deliverer logs:\n{logs.stdout[-6000:]}{logs.stderr}") from None


def post_event(pod_ip: str, event: dict[str, Any], timeout: float = 10) -> bool:
    """POST one event to a deliverer pod; whether it was accepted (202)."""
    req = urllib.request.Request(f"http://{pod_ip}:8080/v1/events",
                                 data=json.dumps(event).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bool(resp.status == 202)
    except (urllib.error.URLError, OSError):
        return False


def test_operator_pod_is_ready_and_reconciles_with_its_own_service_account(
        kube: Kube, release: str, restricted: str, gateway: str) -> None:
    [operator] = pods(kube, restricted, OPERATOR)
    assert operator["status"]["phase"] == "Running" and pod_ready(operator)
    assert operator["spec"]["serviceAccountName"] == f"{release}-hookgate"
    # The chart installed a Role in this namespace only: nothing else could do the job.
    assert get(kube, "clusterrole", f"{release}-hookgate") is None

    started = time.monotonic()

    def reconciled() -> dict[str, Any] | None:
        found = get(kube, "webhookgateway", gateway, restricted)
        return found if found is not None and ready(found) else None

    gw = wait_for_blocking(reconciled, timeout=90, interval=0.5,
                           what="the operator pod to set the gateway Ready=True")
    assert gw is not None
    print(f"gateway Ready {time.monotonic() - started:.1f}s after examples/ were applied")
    assert gw["status"]["observedGeneration"] == gw["metadata"]["generation"]
    for endpoint in ("local-receiver", "audit"):
        wait_for_blocking(
            lambda e=endpoint: ready(get(kube, "webhookendpoint", e, restricted)),  # type: ignore[misc]
            timeout=30, interval=0.5, what=f"endpoint {endpoint} to be Ready")
    assert get(kube, "secret", "audit-hookgate-signing", restricted)  # generated by the pod
    logs = kube.kubectl("logs", "-n", restricted, operator["metadata"]["name"]).stdout
    assert "forbidden" not in logs.lower() and "Traceback" not in logs, logs[-5000:]


def test_operator_and_deliverer_pods_pass_the_restricted_pod_security_standard(
        kube: Kube, node: Node, restricted: str, gateway: str) -> None:
    wait_for_deliverers(kube, restricted)
    # The namespace really enforces: a pod without the security context is refused.
    plain = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain"},
             "spec": {"containers": [{"name": "c", "image": node.image}]}}
    refused = kube.kubectl("apply", "-n", restricted, "-f", "-", input=json.dumps(plain),
                           check=False)
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused.stderr
    # And what runs there was admitted under it (no exemptions, no warn-only mode).
    labels = json.loads(kube.kubectl("get", "namespace", restricted, "-o", "json").stdout)[
        "metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert pods(kube, restricted, OPERATOR) and ready_deliverers(kube, restricted)


def test_events_posted_to_a_deliverer_pod_reach_the_host_signed(
        kube: Kube, restricted: str, gateway: str, receiver: HostReceiver) -> None:
    [pod, *_] = wait_for_deliverers(kube, restricted)
    assert post_event(pod["status"]["podIP"], {"type": "order.created", "data": {"id": 7}})

    def arrived(path: str) -> Any:
        return [d for d in receiver.deliveries(path) if d.event["data"] == {"id": 7}]

    # `orders` routes order.* to local-receiver, `everything-audit` routes * to audit.
    [orders] = wait_for_blocking(lambda: arrived("/webhooks"), timeout=30, interval=0.2,
                                 what="order.created at local-receiver")
    [audit] = wait_for_blocking(lambda: arrived("/audit"), timeout=30, interval=0.2,
                                what="order.created at audit")
    Webhook(EXAMPLE_SECRET).verify(orders.body, orders.headers)
    generated = kube.kubectl("get", "secret", "-n", restricted, "audit-hookgate-signing",
                             "-o", "jsonpath={.data.secret}").stdout
    Webhook(base64.b64decode(generated).decode()).verify(audit.body, audit.headers)
    assert orders.headers["x-example"] == "hookgate"  # the endpoint's own header


def test_a_new_subscription_reaches_the_running_pods(
        kube: Kube, restricted: str, gateway: str, receiver: HostReceiver) -> None:
    pod_ips = [p["status"]["podIP"] for p in ready_deliverers(kube, restricted)]
    assert pod_ips
    sub = {"apiVersion": "hookgate.io/v1alpha1", "kind": "Subscription",
           "metadata": {"name": "late", "namespace": restricted},
           "spec": {"endpointRef": {"name": "local-receiver"}, "eventTypes": ["late.*"]}}
    accepted_at: dict[int, float] = {}
    numbers = itertools.count()

    def routed() -> float | None:
        for d in receiver.deliveries("/webhooks"):
            if d.event.get("type") == "late.probe":
                return accepted_at[d.event["data"]["n"]]
        # A probe to every running pod; the first one routed to local-receiver counts.
        for ip in pod_ips:
            n = next(numbers)
            if post_event(ip, {"type": "late.probe", "data": {"n": n}}):
                accepted_at[n] = time.monotonic()
        return None

    applied = time.monotonic()
    kube.kubectl("apply", "-f", "-", input=json.dumps(sub))
    first = wait_for_blocking(routed, timeout=60, interval=0.05,
                              what="an event of the new Subscription at local-receiver")
    assert first is not None
    print(f"new Subscription: first event routed by it was accepted "
          f"{first - applied:.2f}s after kubectl apply ({len(pod_ips)} pod(s))")


class Load:
    """Events offered at a bounded pace to the Ready deliverer pods, round robin by pod IP,
    each numbered; remembers which ones a pod accepted (202)."""

    PACE = 40.0  # events a second at most: a steady load, not a flood of the 2 cores

    def __init__(self, kube: Kube, namespace: str, run: str) -> None:
        self.kube, self.namespace, self.run = kube, namespace, run
        self.accepted: set[int] = set()
        self.offered = 0
        self.ips: list[str] = []

    def refresh(self) -> None:
        self.ips = [p["status"]["podIP"] for p in ready_deliverers(self.kube, self.namespace)]

    def offer_until(self, done: Callable[[], bool], *, at_least: int, at_most: int) -> None:
        """Offer events until ``done()`` holds and ``at_least`` were offered (or at_most)."""
        start = time.monotonic()
        while self.offered < at_most and (self.offered < at_least or not done()):
            if self.offered % 20 == 0 or not self.ips:
                self.refresh()
            n = self.offered
            self.offered += 1
            if self.ips and post_event(self.ips[n % len(self.ips)], {
                    "type": "order.load", "data": {"run": self.run, "n": n}}, timeout=3):
                self.accepted.add(n)
            # Pace: the next event no earlier than its slot (a rate limit, not a wait).
            ahead = start + self.offered / self.PACE - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    def counts(self, receiver: HostReceiver, path: str) -> Counter[int]:
        return Counter(d.event["data"]["n"] for d in receiver.deliveries(path)
                       if d.event.get("type") == "order.load"
                       and d.event["data"].get("run") == self.run)

    def settle(self, receiver: HostReceiver, timeout: float) -> dict[str, tuple[int, int]]:
        """Wait until every accepted event reached both endpoints; (events, duplicates)
        per path."""
        for path in ("/webhooks", "/audit"):
            wait_for_blocking(lambda p=path: self.accepted <= set(self.counts(receiver, p)),  # type: ignore[misc]
                              timeout=timeout, interval=0.5,
                              what=f"every accepted {self.run} event at {path}")
        out = {}
        for path in ("/webhooks", "/audit"):
            counts = self.counts(receiver, path)
            assert set(counts) <= set(range(self.offered))
            out[path] = (len(counts), sum(c - 1 for c in counts.values()))
        return out


def patch_gateway(kube: Kube, namespace: str, spec: dict[str, Any]) -> None:
    kube.kubectl("patch", "webhookgateway", "default", "-n", namespace, "--type=merge",
                 "-p", json.dumps({"spec": spec}))


def deployment(kube: Kube, namespace: str) -> dict[str, Any]:
    found = get(kube, "deployment", "hookgate-default", namespace)
    assert found is not None
    return found


def rolled_out(kube: Kube, namespace: str, replicas: int) -> bool:
    """The Deployment's rollout is complete at ``replicas`` Ready pods, and no other
    deliverer pod is left (terminating ones included)."""
    d = deployment(kube, namespace)
    status = d.get("status") or {}
    everything = json.loads(kube.kubectl("get", "pods", "-n", namespace, "-l", DELIVERERS,
                                         "-o", "json").stdout)["items"]
    return (d["spec"]["replicas"] == replicas
            and status.get("observedGeneration") == d["metadata"]["generation"]
            and status.get("updatedReplicas") == replicas
            and status.get("readyReplicas") == replicas
            and status.get("replicas") == replicas and len(everything) == replicas)


@pytest.fixture
def slow_receiver(receiver: HostReceiver) -> Iterator[HostReceiver]:
    """Deliveries take 0.3 s at the receiver, so some are in flight at any moment."""
    receiver.delay = 0.3
    yield receiver
    receiver.delay = 0.0


@pytest.mark.timeout(360)
def test_a_force_deleted_deliverer_loses_nothing(
        kube: Kube, restricted: str, gateway: str, slow_receiver: HostReceiver) -> None:
    patch_gateway(kube, restricted, {"autoscaling": {"minReplicas": 2}})
    wait_for_blocking(lambda: rolled_out(kube, restricted, 2), timeout=120, interval=0.5,
                      what="two Ready deliverer pods")
    load = Load(kube, restricted, "kill")
    load.offer_until(lambda: True, at_least=80, at_most=80)
    [victim, *_] = ready_deliverers(kube, restricted)
    killed = time.monotonic()
    kube.kubectl("delete", "pod", "-n", restricted, victim["metadata"]["name"],
                 "--grace-period=0", "--force")
    load.refresh()  # the killed pod's IP no longer answers
    # The load goes on while the Deployment replaces the pod.
    load.offer_until(lambda: rolled_out(kube, restricted, 2), at_least=160, at_most=2000)
    # Deliveries the killed pod had leased are handed out again when their lease runs out
    # (the longest endpoint timeout + 30 s: 45 s with examples/).
    result = load.settle(slow_receiver, timeout=150)
    print(f"force delete: {load.offered} offered, {len(load.accepted)} accepted, all "
          f"delivered {time.monotonic() - killed:.0f}s after the kill; "
          f"(events, duplicates) per endpoint: {result}")


@pytest.mark.timeout(360)
def test_scale_down_and_a_rolling_update_finish_what_is_in_flight(
        kube: Kube, restricted: str, gateway: str, slow_receiver: HostReceiver) -> None:
    wait_for_blocking(lambda: rolled_out(kube, restricted, 2), timeout=120, interval=0.5,
                      what="two Ready deliverer pods")
    load = Load(kube, restricted, "scale")
    load.offer_until(lambda: True, at_least=60, at_most=60)
    # Scale down: maxReplicas 1 clamps the pool at once (the stabilization window applies to
    # what the backlog recommends, not to the bounds).
    patch_gateway(kube, restricted, {"autoscaling": {"minReplicas": 1, "maxReplicas": 1}})
    load.offer_until(lambda: rolled_out(kube, restricted, 1), at_least=120, at_most=2000)
    # A rolling update: a new pod template (another concurrency), surge first.
    generation = deployment(kube, restricted)["metadata"]["generation"]
    patch_gateway(kube, restricted, {"deliverer": {"concurrency": 128}})
    load.offer_until(lambda: deployment(kube, restricted)["metadata"]["generation"] > generation
                     and rolled_out(kube, restricted, 1), at_least=200, at_most=3000)
    result = load.settle(slow_receiver, timeout=90)
    print(f"scale-down and rolling update: {load.offered} offered, {len(load.accepted)} "
          f"accepted; (events, duplicates) per endpoint: {result}")
    for path, (_, duplicates) in result.items():
        assert duplicates == 0, f"{duplicates} duplicate deliveries at {path}"

