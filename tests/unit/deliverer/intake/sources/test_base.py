"""Making a source's consumer: a missing client library names the extra to install."""

from __future__ import annotations

from typing import Any

import pytest

from hookgate.deliverer.intake.sources.base import (
    SourceUnavailable,
    make_consumer,
)
from hookgate.model.routing import (
    BrokerConfig,
    SourceConfig,
)


def test_a_missing_client_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def no_aiokafka(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("aiokafka"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_aiokafka)
    import sys

    monkeypatch.delitem(sys.modules, "hookgate.deliverer.intake.sources.kafka", raising=False)
    config = SourceConfig(key="s/k", path="", scheme="broker",
                          broker=BrokerConfig("kafka", {"bootstrapServers": ["k:1"],
                                                        "topics": ["t"]}))
    with pytest.raises(SourceUnavailable) as info:
        make_consumer(config, {})
    assert "pip install 'hookgate[kafka]'" in str(info.value)
    assert type(info.value).reason == "LibraryMissing"
