"""A config change reaches every side of a running gateway in one step."""

from __future__ import annotations

from pathlib import Path

from tests.support.gateway import StartGateway
from tests.support.manifests import endpoint_yaml, subscription_yaml
from tests.support.receiver import Recorder
from tests.support.waiting import wait_for


def keys_yaml(key: str) -> str:
    return ("apiVersion: hookgate.io/v1alpha1\nkind: WebhookGateway\nmetadata: {name: default}\n"
            "spec:\n  ingest: {apiKeysFrom: {secretRef: {name: ingest-keys}}}\n---\n"
            "apiVersion: v1\nkind: Secret\nmetadata: {name: ingest-keys}\n"
            f"stringData: {{ci: {key}}}\n---\n")


async def test_new_api_keys_guard_ingest_admin_and_sources_at_once(
        start_gateway: StartGateway, receiver: Recorder, tmp_path: Path) -> None:
    rest = endpoint_yaml("a", receiver.url("/a")) + subscription_yaml("all", "a", '["*"]')
    gw = await start_gateway(keys_yaml("old-key") + rest)
    old = {"Authorization": "Bearer old-key"}
    new = {"Authorization": "Bearer new-key"}
    assert (await gw.post("/v1/events", {"type": "x", "data": {}}, headers=old))[0] == 202

    (tmp_path / "config" / "manifests.yaml").write_text(keys_yaml("new-key") + rest)

    async def version() -> int:
        _, doc = await gw.get("/readyz")
        return int(doc["config"]) if int(doc["config"]) > 1 else 0

    await wait_for(version, what="the new config applied")
    for path in ("/v1/dead-letters", "/v1/endpoints", "/v1/sources"):
        async with gw.http.get(gw.url + path, headers=old) as resp:
            assert resp.status == 401, path
        async with gw.http.get(gw.url + path, headers=new) as resp:
            assert resp.status == 200, path
    assert (await gw.post("/v1/events", {"type": "x", "data": {}}, headers=old))[0] == 401
    assert (await gw.post("/v1/events", {"type": "x", "data": {}}, headers=new))[0] == 202


async def test_config_reloads_are_counted_and_an_invalid_change_keeps_the_running_config(
        start_gateway: StartGateway, receiver: Recorder, tmp_path: Path) -> None:
    rest = endpoint_yaml("a", receiver.url("/a")) + subscription_yaml("all", "a", '["*"]')
    gw = await start_gateway(keys_yaml("k1") + rest)
    manifests = tmp_path / "config" / "manifests.yaml"

    async def metric(result: str, value: str) -> bool:
        _, text = await gw.get("/metrics")
        return (f'hookgate_config_reloads_total{{gateway="default/default",result="{result}"}} '
                f"{value}") in text

    manifests.write_text(keys_yaml("k2") + rest)
    await wait_for(lambda: metric("ok", "1.0"), what="one reload counted ok")
    manifests.write_text(keys_yaml("k3") + rest.replace("eventTypes:", "eventTypez:"))
    await wait_for(lambda: metric("error", "1.0"), what="the invalid change counted as error")
    assert gw.rejected, "the invalid change was not reported"
    # the running config is the last valid one
    assert (await gw.post("/v1/events", {"type": "x", "data": {}},
                          headers={"Authorization": "Bearer k2"}))[0] == 202
    assert (await gw.post("/v1/events", {"type": "x", "data": {}},
                          headers={"Authorization": "Bearer k3"}))[0] == 401
    assert await metric("ok", "1.0")
