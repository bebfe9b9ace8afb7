"""The headers Hookgate sets on every delivery itself.

Neither an endpoint's configured headers nor the request headers an inbound source keeps may
replace them: intake drops them when it keeps headers, delivery when it adds them.
"""

from __future__ import annotations

__all__ = ["RESERVED"]

#: Lower-case names of the headers the gateway owns on a delivery request.
RESERVED = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature", "content-type",
                      "user-agent", "content-length", "host"})
