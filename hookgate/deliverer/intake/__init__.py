"""How events enter a gateway: HTTP ingest, inbound webhooks and broker sources, all through
one admission (``admission.Admission``). Independent of delivery."""
