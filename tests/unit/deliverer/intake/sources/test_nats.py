"""NATS: a server URL is shown without the credentials it carries."""

from __future__ import annotations

import pytest

from hookgate.deliverer.intake.sources.nats import without_credentials


@pytest.mark.parametrize(("url", "shown"), [
    ("nats://hookgate:s3cret@nats.shop:4222", "nats://nats.shop:4222"),
    ("tls://a-token@nats.shop:4222", "tls://nats.shop:4222"),
    ("nats://us%40er:p%3Ass@127.0.0.1:4222", "nats://127.0.0.1:4222"),
    ("nats://nats.shop:4222", "nats://nats.shop:4222"),
])
def test_a_url_is_shown_without_its_credentials(url: str, shown: str) -> None:
    assert without_credentials(url) == shown
