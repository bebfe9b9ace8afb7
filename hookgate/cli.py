"""The ``hookgate`` command. Subcommands are verbs; every flag has a ``HOOKGATE_*`` variable."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from hookgate import __version__

__all__ = ["main"]

DEFAULT_URL = "http://127.0.0.1:8080"


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"HOOKGATE_{name}", default)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hookgate", description="Hookgate webhook gateway.")
    p.add_argument("--version", action="version", version=f"hookgate {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway on one machine, configured from files")
    run.add_argument("--config", default=_env("CONFIG", "examples"),
                     help="directory of WebhookEndpoint/Subscription/... manifests "
                          "[HOOKGATE_CONFIG, default: examples]")
    run.add_argument("--queue", default=_env("QUEUE"),
                     help="sqlite:PATH (default: sqlite:DATA_DIR/queue.db) or redis://HOST:PORT/DB "
                          "[HOOKGATE_QUEUE]")
    run.add_argument("--listen", default=_env("LISTEN", "127.0.0.1:8080"),
                     help="HOST:PORT of the HTTP API [HOOKGATE_LISTEN, default: 127.0.0.1:8080]")
    run.add_argument("--data-dir", default=_env("DATA_DIR", ".hookgate"),
                     help="where the embedded queue and generated secrets live "
                          "[HOOKGATE_DATA_DIR, default: .hookgate]")
    run.add_argument("--gateway", default=_env("GATEWAY"),
                     help="NAMESPACE/NAME of the WebhookGateway to run (default: the only one "
                          "in --config, else default/default) [HOOKGATE_GATEWAY]")
    run.add_argument("--concurrency", type=int, default=int(_env("CONCURRENCY", "256") or 256),
                     help="deliveries under way at once [HOOKGATE_CONCURRENCY, default: 256]")
    run.add_argument("--grace", type=float, default=float(_env("GRACE", "30") or 30),
                     help="seconds in-flight deliveries get to finish on SIGTERM [default: 30]")
    run.add_argument("--visibility-timeout", type=float,
                     default=float(_env("VISIBILITY_TIMEOUT", "0") or 0),
                     help="seconds before a delivery leased by a dead process is handed out "
                          "again (default: longest endpoint timeout + 30 s)")
    _log_flags(run)

    deliverer = sub.add_parser("deliverer",
                               help="run a cluster deliverer: config from the operator")
    deliverer.add_argument("--gateway", required=(_env("GATEWAY") is None),
                           default=_env("GATEWAY"),
                           help="NAMESPACE/NAME of the WebhookGateway [HOOKGATE_GATEWAY]")
    deliverer.add_argument("--queue", default=_env("QUEUE"),
                           help="redis://HOST:PORT/DB (the operator sets it) [HOOKGATE_QUEUE]")
    deliverer.add_argument("--listen", default=_env("LISTEN", "0.0.0.0:8080"),
                           help="HOST:PORT of the HTTP API [default: 0.0.0.0:8080]")
    deliverer.add_argument("--kubeconfig", default=None,
                           help="outside a pod: the kubeconfig to use (default: $KUBECONFIG)")
    deliverer.add_argument("--concurrency", type=int,
                           default=int(_env("CONCURRENCY", "256") or 256))
    deliverer.add_argument("--grace", type=float, default=float(_env("GRACE", "30") or 30))
    deliverer.add_argument("--visibility-timeout", type=float,
                           default=float(_env("VISIBILITY_TIMEOUT", "0") or 0))
    _log_flags(deliverer)

    operator = sub.add_parser("operator", help="run the Kubernetes operator")
    operator.add_argument("--namespace", action="append", default=[],
                          help="watch only this namespace (repeat for several; default: all; "
                               "env HOOKGATE_NAMESPACES, comma-separated)")
    operator.add_argument("--kubeconfig", default=None,
                          help="outside a pod: the kubeconfig to use (default: $KUBECONFIG)")
    operator.add_argument("--deliverer-image", default=_env("DELIVERER_IMAGE"),
                          help="image of deliverer pods for gateways that name none "
                               "(e.g. a private mirror) [HOOKGATE_DELIVERER_IMAGE]")
    operator.add_argument("--liveness", default=_env("LIVENESS", "0.0.0.0:8081"),
                          help="HOST:PORT of the liveness probe (/healthz) [default: 0.0.0.0:8081]")
    _log_flags(operator)

    send = sub.add_parser("send", help="send an event to a running gateway")
    send.add_argument("--type", required=True, help="event type, e.g. order.created")
    send.add_argument("--data", default="{}", help="event payload as JSON (default: {})")
    send.add_argument("--id", help="event id (default: generated by the gateway)")
    send.add_argument("--idempotency-key", help="deduplicate sends with the same key (24 h)")
    _client_flags(send)

    recv = sub.add_parser("receive", help="a local receiver that verifies and prints deliveries")
    recv.add_argument("--port", type=int, default=9000, help="port to listen on (default 9000)")
    recv.add_argument("--host", default="127.0.0.1", help="address to listen on")
    recv.add_argument("--secret", action="append", default=[],
                      help="whsec_ secret to verify with (repeat during a rotation)")
    recv.add_argument("--data-dir", help="also trust the secrets a local `hookgate run` "
                                         "generated in this data directory")

    dlq = sub.add_parser("dlq", help="list and replay dead letters")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_list = dlq_sub.add_parser("list", help="list dead letters")
    dlq_list.add_argument("--endpoint", help="only this endpoint (NAME or NAMESPACE/NAME)")
    dlq_list.add_argument("--limit", type=int, default=100)
    dlq_list.add_argument("--output", choices=("text", "json"), default="text")
    _client_flags(dlq_list)
    replay = dlq_sub.add_parser("replay", help="requeue dead letters for delivery")
    replay.add_argument("ids", nargs="*", help="delivery ids (from `hookgate dlq list`)")
    replay.add_argument("--endpoint", help="every dead letter of this endpoint")
    replay.add_argument("--all", action="store_true", help="every dead letter")
    _client_flags(replay)

    events = sub.add_parser("events", help="inspect events and their delivery attempts")
    ev_sub = events.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    show = ev_sub.add_parser("show", help="an event with its attempt log")
    show.add_argument("id")
    show.add_argument("--output", choices=("text", "json"), default="text")
    _client_flags(show)

    endpoints = sub.add_parser("endpoints", help="runtime state of endpoints; resume paused ones")
    ep_sub = endpoints.add_subparsers(dest="endpoints_command", required=True, metavar="ACTION")
    ep_list = ep_sub.add_parser("list", help="endpoints with their pause and circuit state")
    ep_list.add_argument("--output", choices=("text", "json"), default="text")
    _client_flags(ep_list)
    ep_resume = ep_sub.add_parser(
        "resume", help="resume an endpoint paused at runtime (410 Gone, auto-disable)")
    ep_resume.add_argument("name", help="NAME or NAMESPACE/NAME")
    _client_flags(ep_resume)

    validate = sub.add_parser("validate", help="check manifests offline (for GitOps CI)")
    validate.add_argument("paths", nargs="+", help="files or directories of manifests")
    validate.add_argument("--output", choices=("text", "json"), default="text")
    return p


def _log_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "info"),
                   choices=("debug", "info", "warning", "error"))
    p.add_argument("--log-format", default=_env("LOG_FORMAT", "auto"),
                   choices=("auto", "text", "json"),
                   help="auto: text on a terminal, JSON lines otherwise")


def _client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=_env("URL", DEFAULT_URL),
                   help=f"the gateway's API [HOOKGATE_URL, default: {DEFAULT_URL}]")
    p.add_argument("--api-key", default=_env("API_KEY"), help="API key [HOOKGATE_API_KEY]")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"run": cmd_run, "deliverer": cmd_deliverer, "operator": cmd_operator,
               "send": cmd_send, "receive": cmd_receive, "dlq": cmd_dlq,
               "events": cmd_events, "endpoints": cmd_endpoints,
               "validate": cmd_validate}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


# --- run --------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from hookgate.deliverer.config_files import FileConfig
    from hookgate.deliverer.gateway import Gateway, GatewaySettings
    from hookgate.deliverer.queue import open_queue
    from hookgate.logs import setup_logging
    from hookgate.model.problems import ManifestError

    setup_logging(args.log_level, None if args.log_format == "auto" else args.log_format == "json")
    listen = _split_listen(args.listen)
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
    config = loaded.compiled.config
    visibility = args.visibility_timeout or (
        max((e.timeout for e in config.endpoints.values()), default=15.0) + 30.0)
    queue_url = args.queue or f"sqlite:{Path(args.data_dir) / 'queue.db'}"
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    try:
        queue = open_queue(queue_url, gateway=config.gateway, visibility_timeout=visibility)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from hookgate.deliverer.network_guard import LOOPBACK_CIDRS

    # On one machine the receiver is usually local: loopback is allowed on top of the
    # gateway's network.allowCIDRs (the cluster deliverer allows only those).
    settings = GatewaySettings(host=listen[0], port=listen[1], concurrency=args.concurrency,
                               grace=args.grace, extra_allow_cidrs=LOOPBACK_CIDRS)
    gateway = Gateway.create(queue, loaded, settings)

    return _run_gateway_loop(_serve(gateway, files, args.listen))


def _run_gateway_loop(main_: Coroutine[Any, Any, int]) -> int:
    """Run a gateway's event loop: uvloop when it is installed (the ``speedups`` extra) and
    ``HOOKGATE_EVENT_LOOP`` is not ``asyncio``; it cuts the CPU each delivery costs (see
    docs/benchmarks.md)."""
    choice = (_env("EVENT_LOOP", "auto") or "auto").lower()
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


async def _serve(gateway: Any, source: Any, listen: str) -> int:
    """Run ``gateway`` until SIGTERM/SIGINT, applying config changes from ``source``."""
    from hookgate.deliverer.queue import QueueUnavailable

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


def _split_listen(listen: str) -> tuple[str, int] | None:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        print(f"error: --listen {listen!r} is not HOST:PORT, e.g. 127.0.0.1:8080",
              file=sys.stderr)
        return None
    return host, int(port)


def cmd_deliverer(args: argparse.Namespace) -> int:
    from hookgate.deliverer.config_cluster import ClusterConfig, ConfigUnavailable
    from hookgate.deliverer.gateway import Gateway, GatewaySettings
    from hookgate.deliverer.queue import open_queue
    from hookgate.kubeclient import load_client
    from hookgate.logs import setup_logging

    setup_logging(args.log_level, None if args.log_format == "auto" else args.log_format == "json")
    listen = _split_listen(args.listen)
    if listen is None:
        return 2
    if "/" not in args.gateway:
        print("error: --gateway takes NAMESPACE/NAME", file=sys.stderr)
        return 2
    if not args.queue:
        print("error: no queue: set HOOKGATE_QUEUE or --queue to the gateway's Redis URL "
              "(the operator sets it in the deliverer Deployment)", file=sys.stderr)
        return 2
    source = ClusterConfig(args.gateway, load_client(args.kubeconfig))

    async def main_() -> int:
        try:
            loaded = await source.load()
        except ConfigUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        config = loaded.compiled.config
        visibility = args.visibility_timeout or (
            max((e.timeout for e in config.endpoints.values()), default=15.0) + 30.0)
        try:
            queue = open_queue(args.queue, gateway=args.gateway, visibility_timeout=visibility)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        settings = GatewaySettings(host=listen[0], port=listen[1],
                                   concurrency=args.concurrency, grace=args.grace)
        return await _serve(Gateway.create(queue, loaded, settings), source, args.listen)

    return _run_gateway_loop(main_())


def cmd_operator(args: argparse.Namespace) -> int:
    import logging

    import kopf

    from hookgate.logs import setup_logging
    from hookgate.operator import handlers

    setup_logging(args.log_level, None if args.log_format == "auto" else args.log_format == "json")
    namespaces = args.namespace or [n for n in (_env("NAMESPACES") or "").split(",") if n]
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # kopf's own login reads it too
    handlers.OPTIONS.update(namespaced=bool(namespaces), kubeconfig=args.kubeconfig,
                            deliverer_image=args.deliverer_image)
    # kopf logs every handled watch event at INFO; ours are routine wake-ups, so only
    # warnings from it are worth a line. Our own reconcile logs say what changed.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    asyncio.run(kopf.operator(
        clusterwide=not namespaces, namespaces=namespaces,
        liveness_endpoint=f"http://{args.liveness}/healthz",
        # One operator replica (Deployment strategy Recreate); no peering objects needed.
        standalone=True))
    return 0


# --- clients ----------------------------------------------------------------------------

def _call(args: argparse.Namespace, method: str, path: str, body: Any = None
          ) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(args.url.rstrip("/") + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if args.api_key:
        req.add_header("Authorization", f"Bearer {args.api_key}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, {"error": {"message": exc.reason}}
    except urllib.error.URLError as exc:
        raise SystemExit(f"error: cannot reach the gateway at {args.url} ({exc.reason}); "
                         "is `hookgate run` running? (--url / HOOKGATE_URL)") from None


def _fail(status: int, doc: Any) -> int:
    err = (doc or {}).get("error", {}) if isinstance(doc, dict) else {}
    print(f"error ({status}): {err.get('message', doc)}", file=sys.stderr)
    return 1


def cmd_send(args: argparse.Namespace) -> int:
    try:
        data = json.loads(args.data)
    except ValueError as exc:
        print(f"error: --data is not JSON ({exc}); e.g. --data '{{\"amount\": 42}}'",
              file=sys.stderr)
        return 2
    body: dict[str, Any] = {"type": args.type, "data": data}
    if args.id:
        body["id"] = args.id
    if args.idempotency_key:
        body["idempotencyKey"] = args.idempotency_key
    status, doc = _call(args, "POST", "/v1/events", body)
    if status != 202:
        return _fail(status, doc)
    extra = " (duplicate: already accepted)" if doc.get("duplicate") else \
        f" ({doc.get('deliveries', 0)} deliveries)"
    print(f"accepted {doc['id']}{extra}")
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


def cmd_dlq(args: argparse.Namespace) -> int:
    if args.dlq_command == "list":
        query = f"?limit={args.limit}" + (f"&endpoint={args.endpoint}" if args.endpoint else "")
        status, doc = _call(args, "GET", "/v1/dead-letters" + query)
        if status != 200:
            return _fail(status, doc)
        if args.output == "json":
            print(json.dumps(doc["items"], indent=2))
            return 0
        if not doc["items"]:
            print("no dead letters")
        for d in doc["items"]:
            print(f"{d['delivery_id']}  {d['endpoint']}  {d['event_type']}  {d['reason']}  "
                  f"attempts={d['attempts']}  {d.get('error') or ''}")
        return 0
    if not (args.ids or args.endpoint or args.all):
        print("error: name delivery ids, --endpoint NAME or --all", file=sys.stderr)
        return 2
    body: dict[str, Any] = {"ids": args.ids} if args.ids else \
        {"endpoint": args.endpoint} if args.endpoint else {"all": True}
    status, doc = _call(args, "POST", "/v1/dead-letters/replay", body)
    if status != 200:
        return _fail(status, doc)
    print(f"requeued {doc['requeued']} deliveries")
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    status, doc = _call(args, "GET", f"/v1/events/{args.id}")
    if status != 200:
        return _fail(status, doc)
    if args.output == "json":
        print(json.dumps(doc, indent=2))
        return 0
    import datetime as dt

    def when(t: float) -> str:
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"

    print(f"event {doc['id']}  type={doc['type']}  accepted {when(doc['acceptedAt'])}")
    print(f"endpoints: {', '.join(doc['endpoints']) or '(none matched)'}")
    for a in doc["attempts"]:
        result = a["status"] if a["status"] is not None else "-"
        print(f"  {when(a['at'])}  {a['endpoint']}  attempt {a['attempt']}  status {result}  "
              f"{a['duration'] * 1000:.0f} ms  {a['outcome']}  {a.get('error') or ''}")
    return 0


def cmd_endpoints(args: argparse.Namespace) -> int:
    if args.endpoints_command == "resume":
        status, doc = _call(args, "POST", f"/v1/endpoints/{args.name}/resume", {})
        if status != 200:
            return _fail(status, doc)
        print(f"resumed {doc['endpoint']}" if doc["resumed"]
              else f"{doc['endpoint']} was not paused at runtime")
        return 0
    status, doc = _call(args, "GET", "/v1/endpoints")
    if status != 200:
        return _fail(status, doc)
    if args.output == "json":
        print(json.dumps(doc["items"], indent=2))
        return 0
    for e in doc["items"]:
        paused = f"paused ({e['pausedBy']})" if e["paused"] else "active"
        print(f"{e['endpoint']}  {paused}  circuit={e['circuit']}  {e['url']}"
              + (f"  {e['pauseMessage']}" if e.get("pauseMessage") else ""))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from hookgate.validate import validate_paths

    problems = validate_paths(args.paths)
    if args.output == "json":
        print(json.dumps({"valid": not problems, "problems": [p.to_dict() for p in problems]},
                         indent=2))
    else:
        for p in problems:
            print(p)
        print(f"{len(problems)} problem(s)" if problems else "all manifests are valid",
              file=sys.stderr if problems else sys.stdout)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
