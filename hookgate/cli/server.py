"""Server commands: the processes Hookgate runs (``run``, ``deliverer``, ``operator``,
``receive``). ``run`` and ``deliverer`` differ only in where their config comes from; both go
through :func:`serve_gateway`."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hookgate.cli.options import env, log_flags
from hookgate.extras import require_extra

if TYPE_CHECKING:
    from hookgate.deliverer.gateway import Gateway
    from hookgate.model.bundle import GatewayConfig
    from hookgate.model.routing import RoutingConfig

__all__ = ["add_commands"]


def add_commands(sub: Any) -> None:
    """Add the server commands to the ``hookgate`` parser's subcommands."""
    run = sub.add_parser("run", help="run the gateway on one machine, configured from files")
    run.add_argument("--config", default=env("CONFIG", "examples"),
                     help="directory of WebhookEndpoint/Subscription/... manifests "
                          "[HOOKGATE_CONFIG, default: examples]")
    run.add_argument("--queue", default=env("QUEUE"),
                     help="sqlite:PATH (default: sqlite:DATA_DIR/queue.db), redis://HOST:PORT/DB, "
                          "redis+sentinel://HOST:PORT,.../MASTER or redis+cluster://... "
                          "(rediss for TLS) [HOOKGATE_QUEUE]")
    run.add_argument("--listen", default=env("LISTEN", "127.0.0.1:8080"),
                     help="HOST:PORT of the HTTP API [HOOKGATE_LISTEN, default: 127.0.0.1:8080]")
    run.add_argument("--data-dir", default=env("DATA_DIR", ".hookgate"),
                     help="where the embedded queue and generated secrets live "
                          "[HOOKGATE_DATA_DIR, default: .hookgate]")
    run.add_argument("--gateway", default=env("GATEWAY"),
                     help="NAMESPACE/NAME of the WebhookGateway to run (default: the only one "
                          "in --config, else default/default) [HOOKGATE_GATEWAY]")
    gateway_flags(run)

    deliverer = sub.add_parser("deliverer",
                               help="run a cluster deliverer: config from the operator")
    deliverer.add_argument("--gateway", required=(env("GATEWAY") is None),
                           default=env("GATEWAY"),
                           help="NAMESPACE/NAME of the WebhookGateway [HOOKGATE_GATEWAY]")
    deliverer.add_argument("--queue", default=env("QUEUE"),
                           help="the gateway's Redis URL, any form --queue of `hookgate run` "
                                "takes (the operator sets it) [HOOKGATE_QUEUE]")
    deliverer.add_argument("--listen", default=env("LISTEN", "0.0.0.0:8080"),
                           help="HOST:PORT of the HTTP API [default: 0.0.0.0:8080]")
    deliverer.add_argument("--kubeconfig", default=None,
                           help="outside a pod: the kubeconfig to use (default: $KUBECONFIG)")
    gateway_flags(deliverer)

    operator = sub.add_parser("operator", help="run the Kubernetes operator")
    operator.add_argument("--namespace", action="append", default=[],
                          help="watch only this namespace (repeat for several; default: all; "
                               "env HOOKGATE_NAMESPACES, comma-separated)")
    operator.add_argument("--kubeconfig", default=None,
                          help="outside a pod: the kubeconfig to use (default: $KUBECONFIG)")
    operator.add_argument("--deliverer-image", default=env("DELIVERER_IMAGE"),
                          help="image of deliverer pods for gateways that name none "
                               "(e.g. a private mirror) [HOOKGATE_DELIVERER_IMAGE]")
    operator.add_argument("--liveness", default=env("LIVENESS", "0.0.0.0:8081"),
                          help="HOST:PORT of the liveness probe (/healthz) [default: 0.0.0.0:8081]")
    operator.add_argument("--metrics", default=env("METRICS"),
                          help="HOST:PORT to serve the operator's Prometheus metrics on "
                               "(/metrics; default: not served) [HOOKGATE_METRICS]")
    operator.add_argument("--readiness", default=env("READINESS", "0.0.0.0:8082"),
                          help="HOST:PORT of the readiness probe (/readyz: started, and the API "
                               "server answers) [default: 0.0.0.0:8082]")
    log_flags(operator)

    recv = sub.add_parser("receive", help="a local receiver that verifies and prints deliveries")
    recv.add_argument("--port", type=int, default=9000, help="port to listen on (default 9000)")
    recv.add_argument("--host", default="127.0.0.1", help="address to listen on")
    recv.add_argument("--secret", action="append", default=[],
                      help="whsec_ secret to verify with (repeat during a rotation)")
    recv.add_argument("--data-dir", help="also trust the secrets a local `hookgate run` "
                                         "generated in this data directory")

    run.set_defaults(handler=cmd_run)
    deliverer.set_defaults(handler=cmd_deliverer)
    operator.set_defaults(handler=cmd_operator)
    recv.set_defaults(handler=cmd_receive)


# --- the gateway, from files or from the cluster ------------------------------------------

def gateway_flags(p: argparse.ArgumentParser) -> None:
    """The flags ``run`` and ``deliverer`` share."""
    p.add_argument("--concurrency", type=int, default=int(env("CONCURRENCY", "256") or 256),
                   help="deliveries under way at once [HOOKGATE_CONCURRENCY, default: 256]")
    p.add_argument("--grace", type=float, default=float(env("GRACE", "30") or 30),
                   help="seconds in-flight deliveries get to finish on SIGTERM "
                        "[HOOKGATE_GRACE, default: 30]")
    p.add_argument("--idle-timeout", type=float, default=float(env("IDLE_TIMEOUT", "60") or 60),
                   help="seconds before a connection with no request under way (idle, or "
                        "whose request headers never complete) is closed "
                        "[HOOKGATE_IDLE_TIMEOUT, default: 60]")
    p.add_argument("--body-timeout", type=float, default=float(env("BODY_TIMEOUT", "30") or 30),
                   help="seconds a request body may take to arrive before the request gets "
                        "a 408 [HOOKGATE_BODY_TIMEOUT, default: 30]")
    p.add_argument("--visibility-timeout", type=float,
                   default=float(env("VISIBILITY_TIMEOUT", "0") or 0),
                   help="seconds before a delivery leased by a dead process is handed out "
                        "again [HOOKGATE_VISIBILITY_TIMEOUT, default: longest endpoint "
                        "timeout + 30 s]")
    log_flags(p)


class ConfigSource(Protocol):
    async def watch(self, apply: Any, reject: Any = None) -> None: ...


def visibility_timeout(config: RoutingConfig, flag: float) -> float:
    """The lease a dead process's deliveries wait out: the flag, else the longest endpoint
    timeout plus 30 s (a live process always finishes an attempt before its lease ends)."""
    return flag or max((e.timeout for e in config.endpoints.values()), default=15.0) + 30.0


def split_listen(listen: str, flag: str = "--listen") -> tuple[str, int] | None:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        print(f"error: {flag} {listen!r} is not HOST:PORT, e.g. 127.0.0.1:8080",
              file=sys.stderr)
        return None
    return host, int(port)


def build_gateway(args: argparse.Namespace, queue_url: str, loaded: GatewayConfig,
                  listen: tuple[str, int], extra_allow_cidrs: tuple[str, ...] = ()
                  ) -> Gateway | None:
    """The gateway both server modes run: its queue opened by URL, settings from the flags.
    None (after saying why) when the queue URL is not one Hookgate knows."""
    from hookgate.deliverer.gateway import Gateway, GatewaySettings
    from hookgate.deliverer.queues.factory import open_queue

    config = loaded.compiled.config
    try:
        queue = open_queue(queue_url, gateway=config.gateway,
                           visibility_timeout=visibility_timeout(config,
                                                                 args.visibility_timeout),
                           min_replica_acks=loaded.min_replica_acks,
                           redis_ca=env("REDIS_CA"), partitions=loaded.partitions)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    settings = GatewaySettings(host=listen[0], port=listen[1], concurrency=args.concurrency,
                               grace=args.grace, idle_timeout=args.idle_timeout,
                               body_timeout=args.body_timeout,
                               extra_allow_cidrs=extra_allow_cidrs)
    return Gateway.create(queue, loaded, settings)


async def serve_gateway(gateway: Gateway, source: ConfigSource, listen: str) -> int:
    """Run ``gateway`` until SIGTERM/SIGINT, applying config changes from ``source``."""
    from hookgate.deliverer.queues.base import QueueUnavailable

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await gateway.start()
    except QueueUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot listen on {listen}: {exc.strerror}; choose another --listen",
              file=sys.stderr)
        return 1
    watcher = asyncio.create_task(source.watch(gateway.apply, gateway.reject))
    await stop.wait()
    watcher.cancel()
    await gateway.stop()
    return 0


def run_event_loop(main_: Coroutine[Any, Any, int]) -> int:
    """Run a gateway's event loop: uvloop when it is installed (the ``speedups`` extra) and
    ``HOOKGATE_EVENT_LOOP`` is not ``asyncio``; it cuts the CPU each delivery costs (see
    docs/benchmarks.md)."""
    choice = (env("EVENT_LOOP", "auto") or "auto").lower()
    if choice not in ("auto", "asyncio", "uvloop"):
        print(f"error: HOOKGATE_EVENT_LOOP={choice!r}; use auto, asyncio or uvloop",
              file=sys.stderr)
        return 2
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                print("error: HOOKGATE_EVENT_LOOP=uvloop but uvloop is not installed; "
                      "install hookgate[speedups]", file=sys.stderr)
                return 2
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main_)
    return asyncio.run(main_)


def cmd_run(args: argparse.Namespace) -> int:
    from hookgate.deliverer.config.files import FileConfig
    from hookgate.deliverer.delivery.network_guard import LOOPBACK_CIDRS
    from hookgate.logs import setup_logging
    from hookgate.model.problems import ManifestError

    setup_logging(args.log_level, None if args.log_format == "auto" else args.log_format == "json")
    listen = split_listen(args.listen)
    if listen is None:
        return 2
    files = FileConfig(args.config, args.data_dir, args.gateway)
    try:
        loaded = files.load()
    except ManifestError as exc:
        print(f"error: the config in {args.config} is not valid; nothing was started:",
              file=sys.stderr)
        for p in exc.problems:
            print(f"  {p}", file=sys.stderr)
        return 2
    queue_url = args.queue or f"sqlite:{Path(args.data_dir) / 'queue.db'}"
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    # On one machine the receiver is usually local: loopback is allowed on top of the
    # gateway's network.allowCIDRs (the cluster deliverer allows only those).
    gateway = build_gateway(args, queue_url, loaded, listen, LOOPBACK_CIDRS)
    if gateway is None:
        return 2
    return run_event_loop(serve_gateway(gateway, files, args.listen))


def cmd_deliverer(args: argparse.Namespace) -> int:
    from hookgate.deliverer.config.apiserver import ApiServer, load_credentials
    from hookgate.deliverer.config.cluster import ClusterConfig, ConfigUnavailable
    from hookgate.logs import setup_logging

    setup_logging(args.log_level, None if args.log_format == "auto" else args.log_format == "json")
    listen = split_listen(args.listen)
    if listen is None:
        return 2
    if "/" not in args.gateway:
        print("error: --gateway takes NAMESPACE/NAME", file=sys.stderr)
        return 2
    if not args.queue:
        print("error: no queue: set HOOKGATE_QUEUE or --queue to the gateway's Redis URL "
              "(the operator sets it in the deliverer Deployment)", file=sys.stderr)
        return 2
    try:
        api = ApiServer(load_credentials(args.kubeconfig))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    source = ClusterConfig(args.gateway, api)

    async def main_() -> int:
        try:
            try:
                loaded = await source.load()
            except ConfigUnavailable as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            gateway = build_gateway(args, args.queue, loaded, listen)
            if gateway is None:
                return 2
            return await serve_gateway(gateway, source, args.listen)
        finally:
            await source.close()

    return run_event_loop(main_())


def cmd_operator(args: argparse.Namespace) -> int:
    if args.kubeconfig:
        # Before anything imports the kubernetes client: it fixes its default kubeconfig
        # path from $KUBECONFIG on import, and kopf's login uses that default.
        os.environ["KUBECONFIG"] = args.kubeconfig
    require_extra("operator", "kopf", "kubernetes", what="hookgate operator")
    import logging

    import kopf

    from hookgate.logs import setup_logging
    from hookgate.operator import handlers
    from hookgate.operator.readiness import Readiness, serve_readiness

    setup_logging(args.log_level, None if args.log_format == "auto" else args.log_format == "json")
    namespaces = args.namespace or [n for n in (env("NAMESPACES") or "").split(",") if n]
    handlers.OPTIONS.update(namespaced=bool(namespaces), namespaces=namespaces,
                            kubeconfig=args.kubeconfig, deliverer_image=args.deliverer_image)
    # kopf logs every handled watch event at INFO; ours are routine wake-ups, so only
    # warnings from it are worth a line. Our own reconcile logs say what changed.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    readiness_address = split_listen(args.readiness, "--readiness")
    if readiness_address is None:
        return 2
    if args.metrics:
        from prometheus_client import start_http_server

        from hookgate.operator.metrics import REGISTRY

        host, _, port = args.metrics.rpartition(":")
        start_http_server(int(port), host or "0.0.0.0", registry=REGISTRY)

    async def main() -> None:
        started = asyncio.Event()  # kopf sets it once its start-up handlers have run
        readiness = Readiness(handlers.api_answers, started=started)
        runner = await serve_readiness(readiness, *readiness_address)
        try:
            await kopf.operator(
                clusterwide=not namespaces, namespaces=namespaces,
                liveness_endpoint=f"http://{args.liveness}/healthz", ready_flag=started,
                # One operator replica (Deployment strategy Recreate); no peering objects.
                standalone=True)
        finally:
            await runner.cleanup()

    asyncio.run(main())
    return 0


def cmd_receive(args: argparse.Namespace) -> int:
    from aiohttp import web

    from hookgate.receiver import build_receiver_app

    try:
        secrets_file = Path(args.data_dir) / "generated-secrets.json" if args.data_dir else None
        app = build_receiver_app(args.secret, secrets_file=secrets_file)
    except ValueError as exc:
        print(f"error: --secret: {exc}", file=sys.stderr)
        return 2
    print(f"receiving on http://{args.host}:{args.port}/ "
          f"({'verifying signatures' if args.secret or args.data_dir else 'NOT verifying'})",
          flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0
