"""The three ways to write where Redis is, and what a wrong URL is told."""

from __future__ import annotations

import pytest

from hookgate.deliverer.queues.redis.address import Kind, mask_url, parse


def test_one_server() -> None:
    a = parse("redis://hookgate:p%40ss@redis.shop:6380/2")
    assert (a.kind, a.hosts, a.username, a.password, a.db, a.tls) == (
        Kind.SINGLE, (("redis.shop", 6380),), "hookgate", "p@ss", 2, False)
    assert parse("redis://redis.shop").hosts == (("redis.shop", 6379),)
    assert parse("redis://:only-a-password@h:1/0").username is None
    assert parse("redis://h:1/0?password=s3cret").password == "s3cret"  # as redis-py reads it


def test_sentinel_with_tls_and_options() -> None:
    a = parse("rediss+sentinel://u:p@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/3"
              "?ssl_ca_certs=/etc/ca.pem&sentinel_password=sp")
    assert a.kind is Kind.SENTINEL and a.tls and a.master == "mymaster" and a.db == 3
    assert a.hosts == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert a.ssl_options == {"ssl_ca_certs": "/etc/ca.pem"}
    assert a.options["sentinel_password"] == "sp"


def test_cluster_seeds() -> None:
    a = parse("redis+cluster://n1:7000,n2:7001")
    assert a.kind is Kind.CLUSTER and a.hosts == (("n1", 7000), ("n2", 7001)) and a.db == 0


@pytest.mark.parametrize(("url", "says"), [
    ("http://h:1", "unknown scheme"),
    ("redis+sentinel://h:26379", "names no master"),
    ("redis://a:1,b:2/0", "use redis+sentinel:// or redis+cluster://"),
    ("redis+cluster://a:1/3", "only database 0"),
    ("redis://h:x/0", "port 'x' of h is not a number"),
    ("redis://h:1/zero", "'zero' is not a database number"),
    ("redis://h:1/0?ssl_verify=no", "unknown option 'ssl_verify'"),
    ("redis+sentinel://:1/m", "empty host"),
])
def test_a_wrong_url_says_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ValueError, match="Redis URL") as wrong:
        parse(url)
    assert says in str(wrong.value)


def test_passwords_are_masked_in_every_form() -> None:
    assert mask_url("rediss://:p%40ss@redis.shop:6380/2") == "rediss://:***@redis.shop:6380/2"
    assert mask_url("redis+sentinel://u:pw@a:1,b:2/m?sentinel_password=sp") == \
        "redis+sentinel://u:***@a:1,b:2/m?sentinel_password=***"
    assert mask_url("redis://redis.shop:6379/0") == "redis://redis.shop:6379/0"
    with pytest.raises(ValueError) as wrong:
        parse("redis+sentinel://u:pw@a:1/m?nope=1")
    assert "pw" not in str(wrong.value)


def test_a_mounted_ca_applies_unless_the_url_names_one() -> None:
    assert parse("rediss://h:1/0", ca_file="/etc/ca.crt").ssl_options == {
        "ssl_ca_certs": "/etc/ca.crt"}
    assert parse("rediss://h:1/0?ssl_ca_certs=/own.pem", ca_file="/etc/ca.crt").ssl_options == {
        "ssl_ca_certs": "/own.pem"}
    assert parse("redis://h:1/0", ca_file="/etc/ca.crt").ssl_options == {}  # no TLS
