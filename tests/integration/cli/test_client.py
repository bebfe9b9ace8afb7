"""The hookgate command as a user runs it: a child process against a running gateway."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.gateway import StartGateway
from tests.support.manifests import endpoint_yaml, subscription_yaml
from tests.support.process import run_hookgate
from tests.support.receiver import Recorder
from tests.support.waiting import wait_for


async def test_send_events_show_and_dlq_replay(start_gateway: StartGateway,
                                               receiver: Recorder) -> None:
    failing = True
    receiver.script["/a"] = lambda n: 500 if failing else 204
    gw = await start_gateway(endpoint_yaml("a", receiver.url("/a"), schedule="[0s]")
                             + subscription_yaml("all", "a", '["order.*"]'))
    sent = await run_hookgate("send", "--url", gw.url, "--type", "order.created",
                          "--data", '{"amount": 7}')
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("accepted evt_") and "(1 deliveries)" in sent.stdout
    event_id = sent.stdout.split()[1]
    await receiver.wait_for(lambda r: len(r) == 1)

    async def listed() -> str:
        out = await run_hookgate("dlq", "list", "--url", gw.url, "--endpoint", "a")
        return out.stdout if event_id in out.stdout else ""

    line = await wait_for(listed, what="the dead letter in `hookgate dlq list`")
    assert "default/a  order.created  Exhausted  attempts=1  HTTP 500" in line
    shown = await run_hookgate("events", "show", event_id, "--url", gw.url)
    assert "attempt 1  status 500" in shown.stdout and "dead" in shown.stdout
    failing = False
    replayed = await run_hookgate("dlq", "replay", "--all", "--url", gw.url)
    assert replayed.stdout.strip() == "requeued 1 deliveries"
    got = await receiver.wait_for(lambda r: len(r) == 2)
    assert got[1].status == 204 and got[1].webhook_id == event_id
    await gw.attempts(event_id, 2)  # the success is logged just after the receiver got it
    as_json = await run_hookgate("events", "show", event_id, "--url", gw.url, "--output", "json")
    assert [a["outcome"] for a in json.loads(as_json.stdout)["attempts"]] == ["dead", "success"]


async def test_send_reports_the_gateways_error(start_gateway: StartGateway,
                                               receiver: Recorder) -> None:
    gw = await start_gateway(endpoint_yaml("a", receiver.url("/a")))
    bad = await run_hookgate("send", "--url", gw.url, "--type", "has space")
    assert bad.returncode == 1 and "error (400)" in bad.stderr and '"type" may hold' in bad.stderr
    bad = await run_hookgate("send", "--url", gw.url, "--type", "x", "--data", "{nope")
    assert bad.returncode == 2 and "--data is not JSON" in bad.stderr


async def test_clients_say_when_no_gateway_is_running() -> None:
    out = await run_hookgate("dlq", "list", "--url", "http://127.0.0.1:1")
    assert out.returncode != 0 and "cannot reach the gateway" in out.stderr


@pytest.mark.parametrize(("manifest", "expected"), [
    (subscription_yaml("s", "ghost", '["*"]'),
     "m.yaml:5: Subscription default/s: spec.endpointRef.name: endpoint 'ghost' does not exist"),
    ("apiVersion: hookgate.io/v1alpha1\nkind: WebhookEndpoint\nmetadata: {name: e}\n"
     "spec: {url: 'http://127.0.0.1:1/', timeout: soon}\n",
     "m.yaml:4: WebhookEndpoint default/e: spec.timeout"),
    ("kind: [unclosed\n", "m.yaml:2: invalid YAML"),
])
async def test_run_refuses_an_invalid_config_naming_file_object_and_field(
        tmp_path: Path, manifest: str, expected: str) -> None:
    (tmp_path / "m.yaml").write_text(manifest)
    out = await run_hookgate("run", "--config", str(tmp_path), "--data-dir", str(tmp_path / "d"),
                         "--listen", "127.0.0.1:1")
    assert out.returncode == 2
    assert "is not valid; nothing was started" in out.stderr
    assert expected in out.stderr, out.stderr


async def test_run_explains_an_unsupported_queue(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("")
    out = await run_hookgate("run", "--config", str(tmp_path), "--data-dir", str(tmp_path / "d"),
                         "--queue", "kafka://x")
    assert out.returncode == 2
    assert "use sqlite:PATH, redis://HOST:PORT/DB, redis+sentinel://" in out.stderr
