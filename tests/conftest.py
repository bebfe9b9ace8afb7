"""Fixtures shared by every test directory: a real Redis server for the whole session, and a
recording webhook receiver."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.ci import unavailable
from tests.support.pki import Pki, make_pki
from tests.support.receiver import Recorder
from tests.support.redis_server import (
    INSTALL_HINT,
    RedisCluster,
    RedisServer,
    Secured,
    SentinelSet,
    find_redis_server,
    start_redis_cluster,
    start_sentinel_set,
    tls_options,
)

#: The ACL user (and password) of the TLS Redis.
TLS_USER, TLS_PASSWORD = "hookgate", "s3cret-p@ss"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server (AOF, fsync always) for the session; tests may stop and start it.

    Without redis-server the tests that need it are skipped on a workstation, and fail in
    CI (tests/support/ci.py), where a skipped queue backend would pass for a tested one.
    """
    binary = find_redis_server()
    if binary is None:
        unavailable(INSTALL_HINT)
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def _flushall(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"FLUSHALL SYNC\r\n")
        reply = s.recv(64)
    if not reply.startswith(b"+OK"):
        raise RuntimeError(f"FLUSHALL failed: {reply!r}")


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of an empty Redis (flushed for this test; restarted if a test left it down)."""
    redis_server.start()
    _flushall(redis_server.port)
    return redis_server.url


def _redis_binary() -> str:
    binary = find_redis_server()
    if binary is None:
        unavailable(INSTALL_HINT)
    return binary


@pytest.fixture(scope="session")
def redis_sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    """A master, a replica and three Sentinels for the session (left as they are: tests
    that fail the master over make a set of their own with :func:`start_sentinel_set`)."""
    made = start_sentinel_set(_redis_binary(), tmp_path_factory.mktemp("sentinel"))
    yield made
    made.stop()


@pytest.fixture
def redis_sentinel_url(redis_sentinels: SentinelSet) -> str:
    """The redis+sentinel:// URL of an empty master (flushed for this test)."""
    port = redis_sentinels.master_port()
    assert port is not None, "the session's Sentinels disagree on the master"
    _flushall(port)
    return redis_sentinels.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A Redis Cluster of three masters with a replica each, for the session."""
    made = start_redis_cluster(_redis_binary(), tmp_path_factory.mktemp("redis-cluster"))
    yield made
    made.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    """The redis+cluster:// URL of the session's cluster, emptied for this test."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture(scope="session")
def redis_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, Pki]]:
    """A redis-server that speaks TLS only, with one ACL user (the default user is off)."""
    directory = tmp_path_factory.mktemp("redis-tls")
    pki = make_pki(directory)
    server = RedisServer(_redis_binary(), directory, tls=True,
                         extra=tls_options(pki, TLS_USER, TLS_PASSWORD))
    server.start()
    yield server, pki
    server.stop()


@pytest.fixture
def redis_tls_url(redis_tls_server: tuple[RedisServer, Pki]) -> str:
    """rediss://USER:PASS@.../0?ssl_ca_certs=... of the TLS server, flushed for this test."""
    import redis

    server, pki = redis_tls_server
    ca = pki.dir / "ca.pem"
    client = redis.Redis(host="127.0.0.1", port=server.port, ssl=True, ssl_ca_certs=str(ca),
                         username=TLS_USER, password=TLS_PASSWORD)
    try:
        client.flushall()
    finally:
        client.close()
    return (f"rediss://{TLS_USER}:s3cret-p%40ss@127.0.0.1:{server.port}/0"
            f"?ssl_ca_certs={ca}")


@pytest.fixture
async def receiver() -> AsyncIterator[Recorder]:
    """A real HTTP receiver on loopback that records every request (tests/support/receiver.py)."""
    rec = Recorder()
    await rec.start()
    yield rec
    await rec.stop()


#: The Sentinels' own password in the TLS Sentinel set.
SENTINEL_PASSWORD = "sentinel-p@ss"


@pytest.fixture(scope="session")
def redis_tls_secured(tmp_path_factory: pytest.TempPathFactory) -> Secured:
    """A test CA and the ACL user shared by the TLS Sentinel set and the TLS cluster."""
    return Secured(make_pki(tmp_path_factory.mktemp("redis-pki")), TLS_USER, TLS_PASSWORD,
                   SENTINEL_PASSWORD)


@pytest.fixture(scope="session")
def redis_tls_sentinels(tmp_path_factory: pytest.TempPathFactory,
                        redis_tls_secured: Secured) -> Iterator[SentinelSet]:
    """A master, a replica and three Sentinels, all on TLS only: the data nodes with the ACL
    user, the Sentinels with a password of their own."""
    made = start_sentinel_set(_redis_binary(), tmp_path_factory.mktemp("sentinel-tls"),
                              secured=redis_tls_secured)
    yield made
    made.stop()


@pytest.fixture
def redis_sentinel_tls_url(redis_tls_sentinels: SentinelSet) -> str:
    """rediss+sentinel://USER:PASS@.../MASTER/0?ssl_ca_certs=...&sentinel_password=..."""
    redis_tls_sentinels.flush()
    return redis_tls_sentinels.url


@pytest.fixture(scope="session")
def redis_tls_cluster(tmp_path_factory: pytest.TempPathFactory,
                      redis_tls_secured: Secured) -> Iterator[RedisCluster]:
    """A Redis Cluster of 3 masters + 3 replicas with ``tls-cluster yes`` and the ACL user."""
    made = start_redis_cluster(_redis_binary(), tmp_path_factory.mktemp("cluster-tls"),
                               secured=redis_tls_secured)
    yield made
    made.stop()


@pytest.fixture
def redis_cluster_tls_url(redis_tls_cluster: RedisCluster) -> str:
    """rediss+cluster://USER:PASS@SEEDS?ssl_ca_certs=... of the TLS cluster, emptied."""
    redis_tls_cluster.flush()
    return redis_tls_cluster.url
