"""Hookgate: a Kubernetes-native webhook gateway."""

__all__ = ["__version__"]

__version__ = "0.1.0"
