"""``hookgate run`` on a queue it cannot use stops at once with a clear error (what failed and
what to do), without a traceback and without printing a password."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.pki import make_pki
from tests.support.process import run_hookgate
from tests.support.redis_server import RedisServer

EXAMPLES = str(Path(__file__).resolve().parents[3] / "examples")


async def test_a_corrupt_sqlite_file_is_named_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "queue.db").write_bytes(b"this is not a database" * 200)
    done = await run_hookgate("run", "--config", EXAMPLES, "--data-dir", str(tmp_path),
                              "--listen", "127.0.0.1:0")
    assert done.returncode == 1, done.stderr
    assert f"SQLite queue {tmp_path / 'queue.db'}" in done.stderr
    assert "not a Hookgate queue or is damaged: move it aside" in done.stderr
    assert "Traceback" not in done.stderr
    # the file is left as it was: nothing in it is overwritten
    assert (tmp_path / "queue.db").read_bytes() == b"this is not a database" * 200


@pytest.mark.redis
async def test_a_wrong_redis_password_is_reported_masked(tmp_path: Path,
                                                         redis_server: RedisServer) -> None:
    redis_server.start()
    url = f"redis://nobody:s3cret-pw@127.0.0.1:{redis_server.port}/0"
    done = await run_hookgate("run", "--config", EXAMPLES, "--data-dir", str(tmp_path),
                              "--listen", "127.0.0.1:0", "--queue", url)
    assert done.returncode == 1, done.stderr
    assert "check the user and password in --queue" in done.stderr
    assert "redis://nobody:***@" in done.stderr
    assert "s3cret-pw" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.redis
async def test_an_untrusted_sentinel_certificate_says_what_to_check(
        tmp_path: Path, redis_sentinel_tls_url: str) -> None:
    other_ca = make_pki(tmp_path).write()["ca"]
    url = re.sub(r"ssl_ca_certs=[^&]*", f"ssl_ca_certs={other_ca}", redis_sentinel_tls_url)
    done = await run_hookgate("run", "--config", EXAMPLES, "--data-dir", str(tmp_path),
                              "--listen", "127.0.0.1:0", "--queue", url)
    assert done.returncode == 1, done.stderr
    assert "the Sentinels of rediss+sentinel://hookgate:***@" in done.stderr
    assert "the TLS handshake failed (CERTIFICATE_VERIFY_FAILED" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
