"""Broker sources: the consumer contract (``base``), one module per broker, the pure message
mapping, the worker that consumes one source and the runner that follows the config."""
