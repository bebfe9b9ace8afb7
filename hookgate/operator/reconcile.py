"""Reconciling one WebhookGateway: read the cache, compile, apply children, report.

This is the operator's one loop body. The kopf handlers only decide *when* it runs and keep
the :class:`~hookgate.operator.cache.Cache` current; what a reconcile does is here, kept
free of kopf so it reads top to bottom: poll the queue backlog and decide the replica
count; if an input changed (:func:`~hookgate.operator.inputs.publish_reason`), compile
(:func:`hookgate.model.compiler.compile_config`, the same as ``hookgate run``), build the
desired children (pure ``build_*``) and apply them; then write the gateway's status, and
every other object's status in the background, a bounded number at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hookgate.deliverer.queues.base import Queue, QueueUnavailable
from hookgate.deliverer.queues.factory import open_queue
from hookgate.model.bundle import GatewayConfig, min_replica_acks, queue_partitions
from hookgate.model.compiler import compile_config
from hookgate.model.problems import ManifestError, Problem
from hookgate.model.publication import (
    MANIFEST_KEY,
    Manifest,
    Publication,
    manifest_name,
    publish,
)
from hookgate.model.resources import Resource, parse_resource
from hookgate.operator.autoscale import Policy, Recommendation, decide_replicas, outstanding
from hookgate.operator.build import (
    DEFAULT_IMAGE,
    SHARD_LABEL,
    Names,
    build_children,
    build_endpoint_secret,
    generated_secret_name,
    selector,
)
from hookgate.operator.cache import Cache
from hookgate.operator.inputs import RESYNC_SECONDS, Inputs, publish_reason
from hookgate.operator.kube import ApiError, Kube, NotFound, secret_values
from hookgate.operator.metrics import BACKLOG_POLLS, PUBLISHES, STATUS_WRITES
from hookgate.operator.status import condition, merge_conditions, now_iso, object_status
from hookgate.signing import generate_secret

__all__ = ["STATUS_WRITES_IN_FLIGHT", "GatewayState", "Notify", "Reconciler"]

log = logging.getLogger("hookgate.operator")

#: Status patches in flight at once, over all gateways: 10,000 changed statuses neither
#: crowd out the API server nor the next config publish (which waits for none of them).
STATUS_WRITES_IN_FLIGHT = 16

#: notify(object, event type "Normal"|"Warning", reason, message): a Kubernetes Event.
Notify = Callable[[Mapping[str, Any], str, str, str], Awaitable[None]]

#: One object and the status it should have.
StatusWrite = tuple[Mapping[str, Any], dict[str, Any]]


async def _no_events(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    return None


@dataclass
class Compiled:
    """The last compile of a gateway, kept while its inputs (but the replicas) stand."""

    revision: int
    config: GatewayConfig
    publication: Publication  #: the config as shards and their manifest
    endpoints: Mapping[str, Any]  #: the compiled endpoints, by namespace/name
    problems: dict[str, list[Problem]]  #: by "Kind namespace/name"
    gateway_problems: list[Problem]  #: the gateway's own (API keys)


@dataclass
class GatewayState:
    """What the operator remembers about one gateway between reconciles (in memory)."""

    history: tuple[Recommendation, ...] = ()
    replicas: int | None = None
    backlog: int | None = None
    queue: Queue | None = None
    queue_url: str | None = None
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The config version in the API, and the one before it (its shards stay readable).
    published: Manifest | None = None
    before: Manifest | None = None
    pruned: str = ""  # the version whose stale shards were last deleted
    swept: bool = False  #: optional children not built were deleted once since start
    manifest_read: bool = False
    published_inputs: Inputs | None = None  #: the inputs of the last successful apply
    published_at: float = 0.0
    compiled: Compiled | None = None
    publish_problems: list[Problem] = field(default_factory=list)
    children_changed: bool = False  #: a child was deleted or edited by someone else
    applied: dict[tuple[str, str], str] = field(default_factory=dict)  #: child -> version
    deployment_replicas: int | None = None  #: status.replicas of the Deployment, watched
    ready_endpoints: int = 0
    ready_subscriptions: int = 0
    statuses: asyncio.Task[bool] | None = None  #: the background status writes
    statuses_failed: bool = False


def _key(obj: Mapping[str, Any]) -> str:
    md = obj["metadata"]
    return f"{obj['kind']} {md['namespace']}/{md['name']}"


def child_version(obj: Mapping[str, Any]) -> str:
    """What changes when a child's desired state changes: its generation where it has one
    (a Deployment's status updates leave it), else its resourceVersion."""
    md = obj.get("metadata") or {}
    return str(md.get("generation") or md.get("resourceVersion") or "")


class Reconciler:
    def __init__(self, kube: Kube, *, cache: Cache | None = None,
                 notify: Notify = _no_events, clock: Callable[[], float] = time.time,
                 default_image: str = DEFAULT_IMAGE, resync: float = RESYNC_SECONDS) -> None:
        self.kube = kube
        self.cache = cache if cache is not None else Cache()
        self._seeded: set[str] = set()  # namespaces whose cache was filled by a list
        self.default_image = default_image
        self.notify = notify
        self.clock = clock
        self.resync = resync
        self.states: dict[str, GatewayState] = {}
        self._status_slots = asyncio.Semaphore(STATUS_WRITES_IN_FLIGHT)

    def state(self, namespace: str, name: str) -> GatewayState:
        return self.states.setdefault(f"{namespace}/{name}", GatewayState())

    async def forget(self, namespace: str, name: str) -> None:
        state = self.states.pop(f"{namespace}/{name}", None)
        if state is None:
            return
        if state.statuses is not None:
            state.statuses.cancel()
        if state.queue is not None:
            await state.queue.close()

    def child_event(self, type_: str, obj: Mapping[str, Any]) -> None:
        """A watch saw a child of a gateway: note a deletion or someone else's edit, and
        the Deployment's replica count for the gateway's status."""
        md = obj["metadata"]
        gateway = (md.get("labels") or {}).get("hookgate.io/gateway")
        state = self.states.get(f"{md['namespace']}/{gateway}")
        if state is None:
            return
        key = (obj["kind"], md["name"])
        if obj["kind"] == "Deployment" and type_ != "DELETED":
            replicas = int((obj.get("status") or {}).get("replicas") or 0)
            if replicas != state.deployment_replicas:
                state.deployment_replicas = replicas
                state.dirty.set()
        if key in state.applied and (type_ == "DELETED"
                                     or child_version(obj) != state.applied[key]):
            state.children_changed = True
            state.dirty.set()

    # --- the loop body ---------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str) -> None:
        state = self.state(namespace, name)
        async with state.lock:
            await self._seed(namespace)
            gateway = self.cache.get("WebhookGateway", namespace, name)
            if gateway is None:
                return
            await self._reconcile(gateway, state)

    async def _reconcile(self, gateway: dict[str, Any], state: GatewayState) -> None:
        namespace = gateway["metadata"]["namespace"]
        now = self.clock()
        await self.cache.resolve_secrets(namespace, self.kube.find)
        secrets = self.cache.secrets(namespace)
        queue_problems: list[Problem] = []
        backlog = await self._backlog(gateway, state, secrets, queue_problems)
        replicas = await self._replicas(gateway, state, backlog)
        inputs = Inputs(self.cache.revision(namespace), replicas, self.default_image)
        reason = publish_reason(state.published_inputs, inputs, published_at=state.published_at,
                                now=now, children_changed=state.children_changed,
                                resync=self.resync)
        if reason is not None:
            await self._publish(gateway, state, replicas, reason)
        elif state.statuses_failed and (state.statuses is None or state.statuses.done()):
            self._start_statuses(gateway, state)  # retry what failed last time
        compiled = state.compiled
        await self._gateway_status(
            gateway, [*state.publish_problems, *queue_problems],
            compiled.problems if compiled else {}, now_iso(now), replicas, backlog, state)

    async def _publish(self, gateway: dict[str, Any], state: GatewayState, replicas: int,
                       reason: str) -> None:
        """Compile (unless only the replica count changed), apply every child in order,
        then start the status writes: the config goes out first, statuses after it."""
        namespace, name = gateway["metadata"]["namespace"], gateway["metadata"]["name"]
        state.children_changed = False
        if reason == "resync":
            await self._relist(namespace)
        generated = await self._generated_secrets(
            self.cache.objects("WebhookEndpoint", namespace), name,
            self.cache.secrets(namespace))
        revision = self.cache.revision(namespace)  # after the Secrets it generated
        compiled = state.compiled
        if compiled is None or compiled.revision != revision:
            compiled = self._compile(gateway, revision, generated)
            state.compiled = compiled
        problems = list(compiled.gateway_problems)
        mode = ((gateway.get("spec") or {}).get("autoscaling") or {}).get("mode", "Builtin")
        publication = compiled.publication
        await self._read_manifest(namespace, name, state)
        if state.published is None or state.published.version != publication.manifest.version:
            state.before = state.published
        # KEDA needs the form of a URL kept in a Secret (its problems are reported with the
        # backlog's)
        queue_url = self._queue_url(gateway.get("spec") or {}, self.cache.secrets(namespace), [])
        children = build_children(gateway, publication, replicas, self.default_image,
                                  state.before, queue_url=queue_url)
        if mode == "KEDA":
            if not await self.kube.has_api("keda.sh/v1alpha1", "scaledobjects"):
                problems.append(Problem(
                    "autoscaling.mode is KEDA but KEDA's ScaledObject API is not installed",
                    reason="KEDANotInstalled",
                    hint="install KEDA, or set autoscaling.mode to Builtin"))
                children = [c for c in children if c["apiVersion"] != "keda.sh/v1alpha1"]
            for child in children:  # KEDA's HPA owns the replica count
                if child["kind"] == "Deployment":
                    del child["spec"]["replicas"]
        applied = True
        versions: dict[tuple[str, str], str] = {}
        for child in children:
            try:
                result = await self.kube.apply(child)
                versions[(child["kind"], child["metadata"]["name"])] = \
                    child_version(result or {})
            except ApiError as exc:
                applied = False
                problems.append(Problem(
                    f"cannot apply {child['kind']} {child['metadata']['name']}: {exc}",
                    reason="ApplyFailed", hint="check the operator's RBAC and the object"))
        had, state.applied = state.applied, versions  # old shards are no children any more
        if applied:
            state.published = publication.manifest
            await self._prune_shards(namespace, name, state)
            await self._prune_optional(namespace, name, state, had)
        PUBLISHES.labels(reason).inc()
        state.publish_problems = problems
        # A failed apply leaves nothing marked published: the next poll tries again.
        state.published_inputs = (Inputs(revision, replicas, self.default_image) if applied
                                  else None)
        state.published_at = self.clock()
        self._start_statuses(gateway, state)

    async def _seed(self, namespace: str) -> None:
        """Fill the cache of a namespace with one list per kind, before its first reconcile.

        The watches feed the cache as well, but an operator that starts on a namespace of
        many objects would wait for them to hand it every object one by one: the list gives
        the first publish every object at once. What the watches deliver later with the same
        content moves no revision."""
        if namespace in self._seeded:
            return
        for kind in ("WebhookGateway", "WebhookEndpoint", "Subscription", "WebhookSource",
                     "Secret"):  # Secrets last: the cache keeps those the others refer to
            for obj in await self.kube.list(kind, namespace):
                self.cache.put(obj)
        self._seeded.add(namespace)
        self.cache.warmed()

    async def _relist(self, namespace: str) -> None:
        """List the namespace's objects once, to drop any whose deletion no watch reported."""
        for kind in ("WebhookEndpoint", "Subscription", "WebhookSource"):
            before = self.cache.snapshot(kind, namespace)
            listed = {o["metadata"]["name"] for o in await self.kube.list(kind, namespace)}
            if self.cache.prune(kind, namespace, before, listed):
                log.warning("%s: %s deleted without a watch event; dropped on the resync",
                            namespace, kind)

    def _compile(self, gateway: dict[str, Any], revision: int,
                 generated: Mapping[str, str]) -> Compiled:
        namespace, name = gateway["metadata"]["namespace"], gateway["metadata"]["name"]
        spec = gateway.get("spec") or {}
        objects = {kind: self.cache.objects(kind, namespace)
                   for kind in ("WebhookEndpoint", "Subscription", "WebhookSource")}
        secrets = self.cache.secrets(namespace)
        resources, parse_problems = self._parse({**objects, "WebhookGateway": [gateway]},
                                                secrets)
        compiled = compile_config(resources, f"{namespace}/{name}", dict(generated))
        problems: dict[str, list[Problem]] = {}
        for p in [*parse_problems, *compiled.problems]:
            problems.setdefault(f"{p.kind} {p.namespace}/{p.name}", []).append(p)
        gateway_problems: list[Problem] = []
        api_keys = self._api_keys(spec, secrets, gateway_problems)
        config = GatewayConfig(compiled, api_keys,
                               (spec.get("ingest") or {}).get("maxBodyBytes"),
                               min_replica_acks(spec), queue_partitions(spec))
        log.info("gateway %s/%s: compiled revision %d (%d endpoints)", namespace, name,
                 revision, len(compiled.config.endpoints))
        return Compiled(revision, config, publish(name, config), compiled.config.endpoints,
                        problems, gateway_problems)

    # --- config versions ----------------------------------------------------------------

    async def _read_manifest(self, namespace: str, name: str, state: GatewayState) -> None:
        """Learn, once, which version is in the API (an operator that restarted)."""
        if state.manifest_read:
            return
        found = await self.kube.find("ConfigMap", namespace, manifest_name(name))
        try:
            text = ((found or {}).get("data") or {}).get(MANIFEST_KEY)
            state.published = Manifest.from_json(text) if text else None
        except ValueError:
            state.published = None  # an older layout: replaced by this reconcile
        state.manifest_read = True

    async def _prune_shards(self, namespace: str, name: str, state: GatewayState) -> None:
        """Delete the shards of versions older than the current one and the one before it."""
        current = state.published
        if current is None or state.pruned == current.version:
            return
        keep = {*current.routing_shards, *current.keys_shards}
        if state.before is not None:
            keep |= {*state.before.routing_shards, *state.before.keys_shards}
        labels = f"hookgate.io/gateway={name},{SHARD_LABEL}"
        for kind in ("ConfigMap", "Secret"):
            for obj in await self.kube.list(kind, namespace, label_selector=labels):
                if obj["metadata"]["name"] not in keep:
                    with contextlib.suppress(NotFound):  # gone meanwhile
                        await self.kube.delete(kind, namespace, obj["metadata"]["name"])
        if not state.pruned:  # once per operator start: the single Secret of releases
            with contextlib.suppress(NotFound):  # before sharding, if it is still there
                await self.kube.delete("Secret", namespace, f"hookgate-{name}-keys")
        state.pruned = current.version

    async def _prune_optional(self, namespace: str, name: str, state: GatewayState,
                              had: Mapping[tuple[str, str], str]) -> None:
        """Delete the children a gateway no longer has (KEDA's ScaledObject after it left
        KEDA mode, whose HPA would otherwise go on scaling the deliverers; the credentials'
        Secret and TriggerAuthentication after the queue URL lost them): those applied
        before, and, once per operator start, any of them still there from an earlier run."""
        for kind, child in Names(name).optional:
            if (kind, child) in state.applied or (state.swept and (kind, child) not in had):
                continue
            try:
                await self.kube.delete(kind, namespace, child)
            except NotFound:  # not there (or KEDA not installed)
                pass
            except ApiError as exc:  # tried again after the next publish
                log.warning("%s/%s: cannot delete %s %s it no longer needs: %s",
                            namespace, name, kind, child, exc)
                return
        state.swept = True

    # --- parsing and secrets ------------------------------------------------------------

    @staticmethod
    def _parse(objects: Mapping[str, list[dict[str, Any]]],
               secrets: Mapping[str, dict[str, Any]]) -> tuple[list[Resource], list[Problem]]:
        resources: list[Resource] = []
        problems: list[Problem] = []
        for items in [*objects.values(), list(secrets.values())]:
            for obj in items:
                if obj.get("metadata", {}).get("deletionTimestamp"):
                    continue  # being deleted: route nothing to it any more
                try:
                    resources.append(parse_resource(obj))
                except ManifestError as exc:
                    problems.extend(exc.problems)
        return resources, problems

    async def _generated_secrets(self, endpoints: Sequence[dict[str, Any]], gateway: str,
                                 secrets: dict[str, dict[str, Any]]) -> dict[str, str]:
        """Ensure every secret-less endpoint of this gateway has its generated Secret."""
        out: dict[str, str] = {}
        for ep in endpoints:
            spec = ep.get("spec") or {}
            if spec.get("secretRef") or (spec.get("gatewayRef") or {}).get("name",
                                                                          "default") != gateway:
                continue
            md = ep["metadata"]
            secret_name = generated_secret_name(md["name"])
            existing = secrets.get(secret_name)
            value = secret_values(existing).get("secret") if existing else None
            if not value:
                value = generate_secret()
                obj = build_endpoint_secret(ep, value)
                try:
                    created = await self.kube.create(obj)
                    self.cache.put({"kind": "Secret", **(created or obj)})
                    await self.notify(ep, "Normal", "SecretGenerated",
                                      f"generated signing secret in Secret {secret_name}")
                except ApiError as exc:
                    if exc.status != 409:
                        raise
                    value = secret_values(await self.kube.get(
                        "Secret", md["namespace"], secret_name)).get("secret", "")
            out[f"{md['namespace']}/{md['name']}"] = value
        return out

    @staticmethod
    def _api_keys(spec: Mapping[str, Any], secrets: Mapping[str, dict[str, Any]],
                  problems: list[Problem]) -> tuple[str, ...]:
        ref = (((spec.get("ingest") or {}).get("apiKeysFrom") or {}).get("secretRef") or {})
        if not ref.get("name"):
            return ()
        secret = secrets.get(ref["name"])
        if secret is None:
            problems.append(Problem(
                f"Secret {ref['name']!r} for ingest API keys does not exist",
                reason="SecretMissing", field="spec.ingest.apiKeysFrom.secretRef.name",
                hint="create it; each value is one API key"))
            return ()
        return tuple(v.strip() for v in secret_values(secret).values() if v.strip())

    # --- queue and replicas ---------------------------------------------------------------

    def _queue_url(self, spec: Mapping[str, Any], secrets: Mapping[str, dict[str, Any]],
                   problems: list[Problem]) -> str | None:
        redis = (spec.get("queue") or {}).get("redis") or {}
        if redis.get("url"):
            return str(redis["url"])
        ref = (redis.get("urlFrom") or {}).get("secretKeyRef") or {}
        if not ref:
            return None
        secret = secrets.get(ref.get("name", ""))
        value = secret_values(secret).get(ref.get("key", "url")) if secret else None
        if not value:
            problems.append(Problem(
                f"Secret {ref.get('name')!r} with key {ref.get('key', 'url')!r} for the queue "
                "URL does not exist", reason="SecretMissing",
                field="spec.queue.redis.urlFrom.secretKeyRef",
                hint="create the Secret with the Redis URL"))
        return value

    async def _backlog(self, gateway: Mapping[str, Any], state: GatewayState,
                       secrets: Mapping[str, dict[str, Any]], problems: list[Problem]
                       ) -> int | None:
        """Deliveries waiting or in flight (:func:`outstanding`); None when the queue cannot be
        read."""
        namespace, name = gateway["metadata"]["namespace"], gateway["metadata"]["name"]
        url = self._queue_url(gateway.get("spec") or {}, secrets, problems)
        if url is None:
            return None
        if url != state.queue_url:
            if state.queue is not None:
                await state.queue.close()
            state.queue, state.queue_url = None, url
        try:
            if state.queue is None:
                queue = open_queue(url, gateway=f"{namespace}/{name}",
                                   partitions=queue_partitions(gateway.get("spec") or {}))
                await queue.open()
                state.queue = queue
            depth = await state.queue.depth()
            BACKLOG_POLLS.inc()
        except (QueueUnavailable, ValueError) as exc:
            problems.append(Problem(f"cannot read the queue: {exc}", reason="QueueUnreachable",
                                    hint="check spec.queue and that Redis is reachable from "
                                         "the operator"))
            return None
        state.backlog = outstanding(depth)
        return state.backlog

    async def _replicas(self, gateway: Mapping[str, Any], state: GatewayState,
                        backlog: int | None) -> int:
        spec = gateway.get("spec") or {}
        scaling = spec.get("autoscaling") or {}
        mode = scaling.get("mode", "Builtin")
        if mode != "Builtin":
            return int(spec.get("replicas") or scaling.get("minReplicas", 1))
        policy = Policy.from_spec(scaling)
        current = state.replicas
        if current is None:
            deployment = await self.kube.find("Deployment", gateway["metadata"]["namespace"],
                                              f"hookgate-{gateway['metadata']['name']}")
            current = int((deployment or {}).get("spec", {}).get("replicas")
                          or policy.min_replicas)
        if backlog is None:  # blind: keep what runs, within the bounds
            return min(policy.max_replicas, max(policy.min_replicas, current))
        decision = decide_replicas(backlog, current, policy, self.clock(), state.history)
        state.history = decision.history
        if decision.replicas != current:
            direction = "up" if decision.replicas > current else "down"
            await self.notify(gateway, "Normal", "Scaled",
                              f"scaled {direction} from {current} to {decision.replicas} "
                              f"replicas (backlog {backlog}, target "
                              f"{policy.target_backlog} per replica)")
            log.info("gateway %s/%s: %d -> %d replicas (backlog %d)",
                     gateway["metadata"]["namespace"], gateway["metadata"]["name"], current,
                     decision.replicas, backlog)
        state.replicas = decision.replicas
        return decision.replicas

    # --- status ----------------------------------------------------------------------------

    def _start_statuses(self, gateway: Mapping[str, Any], state: GatewayState) -> None:
        """Work out every object's status from the last compile and write the changed ones
        in the background; statuses of an older compile still being written are dropped."""
        if state.statuses is not None:
            state.statuses.cancel()
        compiled = state.compiled
        if compiled is None:
            return
        writes = list(self._statuses(gateway, compiled, state))
        state.statuses_failed = False
        state.statuses = asyncio.create_task(
            self._write_statuses(writes, state),
            name=f"statuses of gateway {gateway['metadata']['namespace']}/"
                 f"{gateway['metadata']['name']}")

    def _statuses(self, gateway: Mapping[str, Any], compiled: Compiled,
                  state: GatewayState) -> Iterator[StatusWrite]:
        """The status each endpoint, subscription and source of this gateway should have
        (counting the Ready ones into ``state``), read from the cache."""
        namespace, name = gateway["metadata"]["namespace"], gateway["metadata"]["name"]
        now = now_iso(self.clock())
        problems, endpoints = compiled.problems, compiled.endpoints
        state.ready_endpoints = state.ready_subscriptions = 0
        for ep in self.cache.objects("WebhookEndpoint", namespace):
            spec = ep.get("spec") or {}
            if (spec.get("gatewayRef") or {}).get("name", "default") != name:
                continue
            found = problems.get(_key(ep), [])
            extra: dict[str, Any] = {}
            if not spec.get("secretRef"):
                extra["secretName"] = generated_secret_name(ep["metadata"]["name"])
            state.ready_endpoints += not found
            yield ep, object_status(ep, found, now, "the endpoint is in its gateway's config",
                                    **extra)
        for sub in self.cache.objects("Subscription", namespace):
            found = problems.get(_key(sub), [])
            target = f"{namespace}/{((sub.get('spec') or {}).get('endpointRef') or {}).get('name')}"
            if not found and target not in endpoints:
                continue  # routed by another gateway, which reports on it
            state.ready_subscriptions += not found
            yield sub, object_status(sub, found, now, f"routes to endpoint {target}")
        for src in self.cache.objects("WebhookSource", namespace):
            spec = src.get("spec") or {}
            if (spec.get("gatewayRef") or {}).get("name", "default") != name:
                continue
            yield src, object_status(src, problems.get(_key(src), []), now,
                                     "the source is in its gateway's config")

    async def _write_statuses(self, writes: Sequence[StatusWrite], state: GatewayState
                              ) -> bool:
        """Write the statuses that changed, at most STATUS_WRITES_IN_FLIGHT at a time over
        all gateways; a failed write is logged and retried on the next poll."""
        pending = iter(writes)
        errors: list[str] = []

        async def worker() -> None:
            for obj, status in pending:
                async with self._status_slots:
                    try:
                        await self._write_status(obj, status)
                    except ApiError as exc:
                        errors.append(f"{_key(obj)}: {exc}")

        await asyncio.gather(*(worker() for _ in range(min(len(writes),
                                                             STATUS_WRITES_IN_FLIGHT))))
        if errors:
            state.statuses_failed = True
            log.warning("%d status writes failed (retried on the next poll), first: %s",
                        len(errors), errors[0])
        return not errors

    async def _write_status(self, obj: Mapping[str, Any], status: dict[str, Any]) -> None:
        old = obj.get("status") or {}
        if all(old.get(k) == v for k, v in status.items()):
            return  # unchanged: write nothing, wake no watcher
        md = obj["metadata"]
        STATUS_WRITES.inc()
        await self.kube.patch_status(obj["kind"], md["namespace"], md["name"], status)
        before: Mapping[str, Any] = next(
            (c for c in old.get("conditions", []) if c.get("type") == "Ready"), {})
        after = next(c for c in status["conditions"] if c["type"] == "Ready")
        if before.get("status") == after["status"] and before.get("reason") == after["reason"]:
            return
        if after["status"] == "True" and not before:
            return  # Ready from its first status on: the status says so, no Event needed
        await self.notify(obj, "Normal" if after["status"] == "True" else "Warning",
                          after["reason"], after["message"])

    async def _gateway_status(self, gateway: dict[str, Any], own: Sequence[Problem],
                              problems: Mapping[str, list[Problem]], now: str, replicas: int,
                              backlog: int | None, state: GatewayState) -> None:
        md = gateway["metadata"]
        generation = int(md.get("generation") or 0)
        if own:
            ready = condition("Ready", False, own[0].reason,
                              "; ".join(p.message + (f" ({p.hint})" if p.hint else "")
                                        for p in own), generation, now)
        else:
            ready = condition("Ready", True, "Reconciled", "children applied", generation, now)
        broken = sorted(k for k, v in problems.items() if v)
        degraded = condition("Degraded", bool(broken),
                             "ObjectsInvalid" if broken else "AllObjectsValid",
                             ("invalid: " + ", ".join(broken)) if broken else
                             "every endpoint, subscription and source is valid",
                             generation, now)
        if state.deployment_replicas is None:  # until the watch of Deployments reports
            deployment = await self.kube.find("Deployment", md["namespace"],
                                              f"hookgate-{md['name']}")
            state.deployment_replicas = int(((deployment or {}).get("status") or {})
                                            .get("replicas") or 0)
        status = {
            "conditions": merge_conditions((gateway.get("status") or {}).get("conditions"),
                                           [ready, degraded]),
            "observedGeneration": generation,
            "replicas": state.deployment_replicas,
            "desiredReplicas": replicas,
            "endpoints": state.ready_endpoints,
            "subscriptions": state.ready_subscriptions,
            "selector": ",".join(f"{k}={v}" for k, v in selector(md["name"]).items()),
        }
        if backlog is not None:
            status["backlog"] = backlog
        await self._write_status(gateway, status)
