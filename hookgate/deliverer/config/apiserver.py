"""Reading objects from the Kubernetes API, the few requests a deliverer makes, over aiohttp.

A deliverer reads a handful of objects: its gateway's config manifest and the shards it names.
The official ``kubernetes`` client would cost every deliverer process about 40 MB of memory
and more than a second of start-up to import (measured; see docs/operator.md), so the
deliverer makes these GETs with the aiohttp it already runs on.

Credentials come from the pod's service account (token, CA and the ``KUBERNETES_SERVICE_*``
variables), or outside a pod from a kubeconfig (``--kubeconfig`` or ``$KUBECONFIG``) that
authenticates with a token or a client certificate. Kubeconfigs that run a credential plugin
(``exec``, ``auth-provider``) are refused with a message: a deliverer outside a pod is a test
or a debugging session, where ``kubectl create token`` gives a token kubeconfig.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

__all__ = ["SERVICE_ACCOUNT_DIR", "ApiError", "ApiServer", "Credentials", "from_kubeconfig",
           "in_cluster", "load_credentials"]

#: Where Kubernetes mounts a pod's service account token and CA.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to prove who we are to it."""

    server: str
    ca_file: str | None = None
    ca_data: str | None = None  # PEM
    token: str | None = None
    token_file: str | None = None  # re-read on each request: projected tokens rotate
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = None  # PEM
    key_data: bytes | None = None
    insecure: bool = False


def in_cluster(environ: Mapping[str, str], root: Path = SERVICE_ACCOUNT_DIR
               ) -> Credentials | None:
    """The pod's service account, or None outside a pod."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port or not (root / "token").exists():
        return None
    host = f"[{host}]" if ":" in host else host
    return Credentials(server=f"https://{host}:{port}", ca_file=str(root / "ca.crt"),
                       token_file=str(root / "token"))


def _data(value: str) -> bytes:
    return base64.b64decode(value)


def from_kubeconfig(doc: Mapping[str, Any], base: Path) -> Credentials:
    """The current context's cluster and user of a parsed kubeconfig (relative file names
    are relative to ``base``); ValueError saying what is missing or unsupported."""
    def named(section: str, name: str) -> Mapping[str, Any]:
        for item in doc.get(section) or []:
            if item.get("name") == name:
                return dict(item.get(section[:-1]) or {})
        raise ValueError(f"the kubeconfig has no {section[:-1]} named {name!r}")

    def path(value: str | None) -> str | None:
        return None if value is None else str(base / value)

    current = doc.get("current-context")
    if not current:
        raise ValueError("the kubeconfig has no current-context")
    context = named("contexts", str(current))
    cluster = named("clusters", str(context.get("cluster")))
    user = named("users", str(context.get("user"))) if context.get("user") else {}
    for unsupported in ("exec", "auth-provider", "username"):
        if unsupported in user:
            raise ValueError(
                f"the kubeconfig's user authenticates with {unsupported!r}, which the "
                "deliverer does not run; use a kubeconfig with a token (kubectl create token "
                "SERVICE-ACCOUNT) or a client certificate")
    if not cluster.get("server"):
        raise ValueError(f"the kubeconfig's cluster {context.get('cluster')!r} has no server")
    ca = cluster.get("certificate-authority-data")
    return Credentials(
        server=str(cluster["server"]).rstrip("/"),
        ca_file=path(cluster.get("certificate-authority")),
        ca_data=_data(ca).decode() if ca else None,
        token=user.get("token"), token_file=path(user.get("tokenFile")),
        cert_file=path(user.get("client-certificate")), key_file=path(user.get("client-key")),
        cert_data=_data(user["client-certificate-data"])
        if "client-certificate-data" in user else None,
        key_data=_data(user["client-key-data"]) if "client-key-data" in user else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify")))


def load_credentials(kubeconfig: str | None = None) -> Credentials:
    """In a pod, its service account; elsewhere ``kubeconfig`` or the first of $KUBECONFIG
    (or ~/.kube/config). ValueError saying what to fix."""
    if kubeconfig is None:
        found = in_cluster(os.environ)
        if found is not None:
            return found
        kubeconfig = (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0] or \
            str(Path.home() / ".kube" / "config")
    try:
        doc = yaml.safe_load(Path(kubeconfig).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read the kubeconfig {kubeconfig}: {exc}; outside a pod, "
                         "pass --kubeconfig or set KUBECONFIG") from None
    if not isinstance(doc, dict):
        raise ValueError(f"the kubeconfig {kubeconfig} is not a kubeconfig")
    return from_kubeconfig(doc, Path(kubeconfig).resolve().parent)


def _ssl_context(creds: Credentials) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=creds.ca_file, cadata=creds.ca_data)
    if creds.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if creds.cert_file and creds.key_file:
        context.load_cert_chain(creds.cert_file, creds.key_file)
    elif creds.cert_data and creds.key_data:
        # The ssl module loads a key only from a file: a private one, removed at once.
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert.write_bytes(creds.cert_data)
            key.touch(0o600)
            key.write_bytes(creds.key_data)
            context.load_cert_chain(str(cert), str(key))
    return context


class ApiServer:
    """GETs against one API server with one set of credentials."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._ssl = _ssl_context(credentials) if credentials.server.startswith("https") \
            else None
        self._session: aiohttp.ClientSession | None = None

    def _headers(self) -> dict[str, str]:
        token = self.credentials.token
        if self.credentials.token_file:
            token = Path(self.credentials.token_file).read_text().strip()
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def get(self, path: str) -> dict[str, Any]:
        """The JSON object at ``path``; ApiError for an error status, OSError (aiohttp's
        connection errors included) when the server cannot be reached."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=TIMEOUT)
        try:
            async with self._session.get(self.credentials.server + path, ssl=self._ssl or True,
                                         headers=self._headers()) as resp:
                if resp.status >= 400:
                    try:
                        message = str((await resp.json(content_type=None)).get("message"))
                    except (ValueError, aiohttp.ClientError, AttributeError):
                        message = resp.reason or ""
                    raise ApiError(resp.status, message)
                body: dict[str, Any] = await resp.json(content_type=None)
                return body
        except aiohttp.ClientError as exc:
            raise OSError(f"cannot reach the Kubernetes API at {self.credentials.server}: "
                          f"{exc}") from None
        except TimeoutError:
            raise OSError(f"the Kubernetes API at {self.credentials.server} did not answer "
                          f"within {TIMEOUT.total:.0f} s") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
