"""A real ``redis-server`` for the tests: started on a free loopback port, with AOF on.

Tests that need Redis talk to a real one, so what they prove holds in production: Lua
scripts, stream semantics, persistence across a restart and the errors a client sees when
the server goes away. :meth:`RedisServer.stop` and :meth:`RedisServer.start` restart it on
the same port and data directory, which is how "a Redis restart loses nothing" is tested.

:class:`RedisServer` also takes extra options (a replica with ``replicaof``, TLS with an ACL
user: :func:`tls_options`), and :class:`RedisSentinel` is one Sentinel (``redis-server
--sentinel``) watching a master; :func:`start_sentinel_set` makes a master, a replica and
three Sentinels that agree on them; :func:`start_redis_cluster` a Redis Cluster of three
masters with a replica each (``redis-cli --cluster create``). Both take a :class:`Secured`:
then every server, Sentinel and cluster bus speaks TLS only, with an ACL user on the data
nodes (and a password on the Sentinels).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.pki import Pki
from tests.support.ports import unused_port
from tests.support.process import ServerProcess, listening
from tests.support.waiting import wait_for_blocking

__all__ = ["INSTALL_HINT", "MASTER", "RedisCluster", "RedisSentinel", "RedisServer",
           "Secured", "SentinelSet", "find_redis_server", "start_redis_cluster",
           "start_sentinel_set", "tls_options"]

#: The Sentinel service name the tests use.
MASTER = "hookgate"

INSTALL_HINT = ("redis-server is not installed; install it (Debian/Ubuntu: "
                "`apt-get install redis-server`, macOS: `brew install redis`) or set "
                "HOOKGATE_REDIS_SERVER to its path")


def find_redis_server() -> str | None:
    """The redis-server binary: ``$HOOKGATE_REDIS_SERVER``, then ``PATH``, then /usr/bin."""
    explicit = os.environ.get("HOOKGATE_REDIS_SERVER")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None


def _ping(port: int) -> bool:
    return _ask(port, b"PING\r\n").startswith(b"+PONG")


@dataclass(frozen=True)
class Secured:
    """TLS with :attr:`pki`'s certificates everywhere, the ACL user ``user``/``password`` on
    the data nodes (the default user off) and ``sentinel_password`` on the Sentinels."""

    pki: Pki
    user: str
    password: str
    sentinel_password: str | None = None

    @property
    def ca(self) -> Path:
        return self.pki.dir / "ca.pem"

    def userinfo(self) -> str:
        """``USER:PASS@``, percent-encoded, for a URL."""
        return (f"{urllib.parse.quote(self.user, safe='')}:"
                f"{urllib.parse.quote(self.password, safe='')}@")

    def query(self, sentinel: bool = False) -> str:
        """``?ssl_ca_certs=...`` (and the Sentinels' password) for a URL."""
        options = {"ssl_ca_certs": str(self.ca)}
        if sentinel and self.sentinel_password:
            options["sentinel_password"] = self.sentinel_password
        return "?" + urllib.parse.urlencode(options, safe="/")

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def auth(self, sentinel: bool = False) -> bytes:
        """The inline AUTH a plain-text helper sends first."""
        if sentinel:
            return f"AUTH {self.sentinel_password}\r\n".encode() if self.sentinel_password else b""
        return f"AUTH {self.user} {self.password}\r\n".encode()


def _ask(port: int, command: bytes, secured: Secured | None = None,
         sentinel: bool = False) -> bytes:
    """One inline command to a port (over TLS and authenticated first when ``secured``); b""
    when nothing answers. An AUTH's own reply is dropped."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw:
            s = (secured.context().wrap_socket(raw, server_hostname="127.0.0.1") if secured
                 else raw)
            auth = secured.auth(sentinel) if secured else b""
            s.sendall(auth + command)
            reply = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return reply
                reply += chunk
                if auth:
                    if b"\r\n" not in reply:
                        continue
                    reply = reply.partition(b"\r\n")[2]  # +OK of the AUTH
                    auth = b""
                if reply and not _partial(reply):
                    return reply
    except OSError:
        return b""


def _partial(reply: bytes) -> bool:
    """Whether a bulk reply (``$N``) has not all arrived yet (big INFO/CLUSTER NODES)."""
    if reply.startswith(b"$"):
        size, _, rest = reply[1:].partition(b"\r\n")
        return size.isdigit() and len(rest) < int(size) + 2
    return not reply.endswith(b"\r\n")


class RedisServer(ServerProcess):
    """One redis-server process with its own data directory; restartable in place."""

    name = "redis"
    start_timeout = 10.0
    poll_interval = 0.02

    def __init__(self, binary: str, directory: Path, port: int | None = None,
                 extra: Sequence[str] = (), tls: bool = False) -> None:
        self.binary = binary
        self.extra = list(extra)
        self.tls = tls  # then ``port`` is the TLS port and there is no plain one
        super().__init__(directory, port)

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        ports = (["--port", "0", "--tls-port", str(self.port)] if self.tls
                 else ["--port", str(self.port)])
        return [self.binary, *ports, "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                "--dir", str(self.directory), "--protected-mode", "no", *self.extra]

    def ready(self) -> bool:
        return listening(self.port) if self.tls else _ping(self.port)


def tls_options(pki: Pki, user: str, password: str) -> list[str]:
    """redis-server options for TLS with ``pki``'s server certificate (clients need not
    present one) and one ACL user allowed everything; the default user is off. A replica
    logs in to its master as that user too."""
    files = pki.write()
    return ["--tls-cert-file", str(files["server_cert"]), "--tls-key-file",
            str(files["server_key"]), "--tls-ca-cert-file", str(files["ca"]),
            "--tls-auth-clients", "no", "--tls-replication", "yes",
            "--user", "default", "off",
            "--user", user, "on", f">{password}", "~*", "&*", "+@all",
            "--masteruser", user, "--masterauth", password]


def _tls_config(secured: Secured) -> str:
    """The TLS lines of a Sentinel's configuration file (it reaches the servers by TLS)."""
    files = secured.pki.write()
    return (f"tls-cert-file {files['server_cert']}\ntls-key-file {files['server_key']}\n"
            f"tls-ca-cert-file {files['ca']}\ntls-auth-clients no\ntls-replication yes\n")


class RedisSentinel(ServerProcess):
    """One Sentinel watching :data:`MASTER` at ``master_port`` (quorum 2, a master is down
    after 1 s of silence)."""

    name = "sentinel"
    start_timeout = 10.0
    poll_interval = 0.02

    def __init__(self, binary: str, directory: Path, master_port: int,
                 secured: Secured | None = None) -> None:
        self.binary = binary
        self.master_port = master_port
        self.secured = secured
        super().__init__(directory)

    def prepare_config(self) -> Path:
        conf = self.directory / "sentinel.conf"
        if not conf.exists():  # Sentinel rewrites its file with what it learns: keep it
            self.directory.mkdir(parents=True, exist_ok=True)
            ports = f"port {self.port}\n"
            secured = ""
            if self.secured is not None:
                ports = f"port 0\ntls-port {self.port}\n"
                secured = (_tls_config(self.secured)
                           + f"sentinel auth-user {MASTER} {self.secured.user}\n"
                           f"sentinel auth-pass {MASTER} {self.secured.password}\n")
                if self.secured.sentinel_password:  # asked of clients and of each other
                    secured += (f"requirepass {self.secured.sentinel_password}\n"
                                f"sentinel sentinel-pass {self.secured.sentinel_password}\n")
            conf.write_text(
                f"{ports}bind 127.0.0.1\nprotected-mode no\n"
                f"dir {self.directory}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 10000\n{secured}")
        return conf

    def command(self) -> list[str]:
        return [self.binary, str(self.prepare_config()), "--sentinel"]

    def ready(self) -> bool:
        return self._ask(b"PING\r\n").startswith(b"+PONG")

    def _ask(self, command: bytes) -> bytes:
        return _ask(self.port, command, self.secured, sentinel=True)

    def master(self) -> int | None:
        """The port of the master this Sentinel believes in now."""
        reply = self._ask(f"SENTINEL get-master-addr-by-name {MASTER}\r\n".encode())
        lines = reply.split(b"\r\n")
        return int(lines[4]) if len(lines) > 4 and lines[4].isdigit() else None

    def knows(self) -> tuple[int, int]:
        """(replicas, other Sentinels) this Sentinel knows of."""
        def count(command: str) -> int:
            reply = self._ask(f"SENTINEL {command} {MASTER}\r\n".encode())
            return int(reply[1:reply.index(b"\r\n")]) if reply.startswith(b"*") else 0
        return count("replicas"), count("sentinels")


@dataclass
class SentinelSet:
    """A master, a replica and three Sentinels over them, all on loopback."""

    nodes: list[RedisServer]  # [first master, first replica]
    sentinels: list[RedisSentinel]
    secured: Secured | None = None

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        if self.secured is None:
            return f"redis+sentinel://{hosts}/{MASTER}/0"
        return (f"rediss+sentinel://{self.secured.userinfo()}{hosts}/{MASTER}/0"
                f"{self.secured.query(sentinel=True)}")

    def flush(self) -> None:
        """Empty the master the Sentinels agree on (its replica follows)."""
        port = self.master_port()
        assert port is not None, "the Sentinels disagree on the master"
        if not _ask(port, b"FLUSHALL SYNC\r\n", self.secured).startswith(b"+OK"):
            raise RuntimeError(f"FLUSHALL on the master at {port} failed")

    def master_port(self) -> int | None:
        """The master the Sentinels agree on, or None while they do not."""
        seen = {s.master() for s in self.sentinels}
        return seen.pop() if len(seen) == 1 else None

    def stop(self) -> None:
        for process in [*self.sentinels, *self.nodes]:
            process.stop(kill=True)


def start_sentinel_set(binary: str, directory: Path, timeout: float = 30.0,
                       secured: Secured | None = None) -> SentinelSet:
    """Start the set and return once every Sentinel knows the replica and the others."""
    tls = secured is not None
    extra = tls_options(secured.pki, secured.user, secured.password) if secured else []
    master = RedisServer(binary, directory / "node0", extra=extra, tls=tls)
    master.start()
    replica = RedisServer(binary, directory / "node1", tls=tls,
                          extra=[*extra, "--replicaof", "127.0.0.1", str(master.port)])
    replica.start()
    sentinels = [RedisSentinel(binary, directory / f"sentinel{i}", master.port, secured)
                 for i in range(3)]
    made = SentinelSet([master, replica], sentinels, secured)
    try:
        for sentinel in sentinels:
            sentinel.start()
        wait_for_blocking(lambda: all(s.knows() == (1, 2) for s in sentinels), timeout=timeout,
                          interval=0.1, what="the Sentinels to find the replica and each other")
    except BaseException:
        made.stop()
        raise
    return made



@dataclass
class RedisCluster:
    """Three masters and three replicas in one Redis Cluster, all on loopback."""

    nodes: list[RedisServer]
    secured: Secured | None = None

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])
        if self.secured is None:
            return f"redis+cluster://{seeds}"
        return f"rediss+cluster://{self.secured.userinfo()}{seeds}{self.secured.query()}"

    def flush(self) -> None:
        """Empty every master (replicas follow)."""
        for node in self.nodes:
            # a replica refuses: harmless
            _ask(node.port, b"FLUSHALL SYNC\r\n", self.secured)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(kill=True)


def start_redis_cluster(binary: str, directory: Path, timeout: float = 60.0,
                        secured: Secured | None = None) -> RedisCluster:
    """Start six cluster-enabled servers and join them: 3 masters, 1 replica each. With
    ``secured`` the clients, the replication and the cluster bus are all on TLS."""
    extra, cli_tls = [], []
    if secured is not None:
        extra = [*tls_options(secured.pki, secured.user, secured.password),
                 "--tls-cluster", "yes"]
        cli_tls = ["--tls", "--cacert", str(secured.ca), "--user", secured.user,
                   "--pass", secured.password]
    nodes = [RedisServer(binary, directory / f"node{i}", tls=secured is not None,
                         extra=["--cluster-enabled", "yes", "--cluster-config-file",
                                "nodes.conf", "--cluster-node-timeout", "2000",
                                # the bus port: ours, not port + 10000 (past 65535 for
                                # an ephemeral port)
                                "--cluster-port", str(unused_port()), *extra])
             for i in range(6)]
    made = RedisCluster(nodes, secured)

    def ask(port: int, command: bytes) -> bytes:
        return _ask(port, command, secured)

    try:
        for node in nodes:
            node.start()
        cli = str(Path(binary).with_name("redis-cli"))
        subprocess.run([cli, *cli_tls, "--cluster", "create",
                        *(f"127.0.0.1:{n.port}" for n in nodes), "--cluster-replicas", "1",
                        "--cluster-yes"], check=True, capture_output=True, timeout=timeout)
        def formed() -> bool:
            if not all(b"cluster_state:ok" in ask(n.port, b"CLUSTER INFO\r\n")
                       and ask(n.port, b"CLUSTER NODES\r\n").count(b"slave") == 3
                       for n in nodes):
                return False
            replication = [ask(n.port, b"INFO replication\r\n") for n in nodes]
            # a replica that never synced cannot take over (cluster-replica-validity-factor)
            return sum(b"master_link_status:up" in r for r in replication) == 3

        wait_for_blocking(formed, timeout=timeout, interval=0.1,
                          what="every node to see the cluster ok, each master with a synced "
                               "replica")
    except BaseException:
        made.stop()
        raise
    return made
