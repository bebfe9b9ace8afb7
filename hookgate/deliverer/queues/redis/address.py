"""Where a gateway's Redis is: the three URL forms of ``--queue`` and ``spec.queue.redis``.

::

    redis://[USER:PASS@]HOST:PORT[/DB]                          one server
    redis+sentinel://[USER:PASS@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]
                                                                a master found through Sentinel
    redis+cluster://[USER:PASS@]HOST:PORT[,HOST:PORT...]        a Redis Cluster (seed nodes)

``rediss`` in place of ``redis`` turns TLS on (for the Sentinels too). Query parameters pass
TLS settings: ``ssl_ca_certs=PATH`` (a CA bundle), ``ssl_certfile=PATH`` and
``ssl_keyfile=PATH`` (a client certificate), ``ssl_cert_reqs=none`` (no verification: tests
only). USER and PASS are the data nodes' ACL user and password (percent-encoded; ``username``
and ``password`` query parameters work too); Sentinels are asked without credentials unless
``sentinel_password`` (and ``sentinel_username``) is given.
``unix:///path/to/redis.sock`` reaches a local server by its socket.

Pure parsing, no I/O: :mod:`~hookgate.deliverer.queues.redis.client` connects.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["FORMS", "Kind", "RedisAddress", "mask_url", "parse"]

#: What an error message shows as the accepted forms.
FORMS = ("redis://[USER:PASS@]HOST:PORT[/DB], "
         "redis+sentinel://[USER:PASS@]HOST:PORT[,HOST:PORT...]/MASTER[/DB] or "
         "redis+cluster://[USER:PASS@]HOST:PORT[,HOST:PORT...] (rediss... for TLS)")

_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_OPTIONS = (*_TLS_OPTIONS, "sentinel_username", "sentinel_password", "username", "password")
_SCHEMES = {"redis": "single", "rediss": "single", "redis+sentinel": "sentinel",
            "rediss+sentinel": "sentinel", "redis+cluster": "cluster",
            "rediss+cluster": "cluster", "unix": "single"}


class Kind(Enum):
    SINGLE = "single"
    SENTINEL = "sentinel"
    CLUSTER = "cluster"


@dataclass(frozen=True)
class RedisAddress:
    """A parsed queue URL. ``url`` is the original (it may hold a password: log ``masked``)."""

    url: str
    kind: Kind
    hosts: tuple[tuple[str, int], ...]  # the server, the Sentinels or the cluster's seeds
    tls: bool = False
    username: str | None = None
    password: str | None = None
    db: int = 0
    master: str | None = None  # the Sentinel service name
    options: dict[str, str] = field(default_factory=dict)  # TLS and Sentinel credentials

    @property
    def masked(self) -> str:
        return mask_url(self.url)

    @property
    def ssl_options(self) -> dict[str, str]:
        """redis-py keyword arguments for TLS (``ssl_cert_reqs`` etc.), empty without TLS."""
        if not self.tls:
            return {}
        return {k: v for k, v in self.options.items() if k in _TLS_OPTIONS}


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for logs and error messages."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable Redis URL>"
    netloc = parts.netloc
    if "@" in netloc and ":" in netloc.rpartition("@")[0]:
        user = netloc.rpartition("@")[0].partition(":")[0]
        netloc = f"{user}:***@{netloc.rpartition('@')[2]}"
    query = urllib.parse.urlencode(
        [(k, "***" if "password" in k.lower() else v)
         for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)], safe="*/")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def parse(url: str, ca_file: str | None = None) -> RedisAddress:
    """Parse a queue URL; ``ValueError`` says what is wrong and shows the accepted forms.

    ``ca_file`` is the CA bundle for TLS when the URL names none (``ssl_ca_certs``): a
    deliverer pod's mounted ``spec.queue.redis.caFrom``."""
    scheme, sep, rest = url.partition("://")
    kind = _SCHEMES.get(scheme.lower()) if sep else None
    if kind is None:
        raise ValueError(f"Redis URL {mask_url(url)} has an unknown scheme; use {FORMS}")
    if scheme == "unix":
        return RedisAddress(url, Kind.SINGLE, ())
    tls = scheme.lower().startswith("rediss")
    # the query first: its values (a CA bundle's path) may hold slashes
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = urllib.parse.unquote(user) or None
        password = urllib.parse.unquote(secret) if colon else None
    hosts = tuple(_host(h, url) for h in hostlist.split(","))
    options: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name not in _OPTIONS:
            raise ValueError(f"Redis URL {mask_url(url)}: unknown option {name!r}; the options "
                             f"are {', '.join(_OPTIONS)}")
        if name in ("username", "password"):  # as redis-py reads them from a query
            username = value if name == "username" else username
            password = value if name == "password" else password
        else:
            options[name] = value
    parts = [p for p in path.split("/") if p]
    master = None
    if Kind(kind) is Kind.SENTINEL:
        if not parts:
            raise ValueError(f"Redis URL {mask_url(url)} names no master: "
                             "redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB]")
        master, parts = urllib.parse.unquote(parts[0]), parts[1:]
    elif Kind(kind) is Kind.SINGLE and len(hosts) > 1:
        raise ValueError(f"Redis URL {mask_url(url)} lists several hosts; use redis+sentinel:// "
                         "or redis+cluster:// for those")
    if Kind(kind) is Kind.CLUSTER and parts:
        raise ValueError(f"Redis URL {mask_url(url)}: a Redis Cluster has only database 0; "
                         "drop the /DB")
    if len(parts) > 1 or (parts and not parts[0].isdigit()):
        raise ValueError(f"Redis URL {mask_url(url)}: {'/'.join(parts)!r} is not a database "
                         "number")
    if ca_file and "ssl_ca_certs" not in options:
        options["ssl_ca_certs"] = ca_file
    return RedisAddress(url, Kind(kind), hosts, tls, username, password,
                        int(parts[0]) if parts else 0, master, options)


def _host(text: str, url: str) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:PORT
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"Redis URL {mask_url(url)} has an empty host; use {FORMS}")
    if port and not port.isdigit():
        raise ValueError(f"Redis URL {mask_url(url)}: port {port!r} of {host} is not a number")
    return host, int(port) if port else (26379 if "sentinel" in url.split("://")[0] else 6379)
