"""Where a gateway's config comes from (``files`` for ``hookgate run``, ``cluster`` for a
deliverer pod) and the live snapshot every request and delivery reads (``live``)."""
