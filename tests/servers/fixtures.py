"""Pytest fixtures for the S3 test server; import them into a test module:

    from tests.servers.fixtures import s3_server  # noqa: F401

The server (radosgw, see ``s3server``) starts once per session. Tests using
it skip only when ``PACH_SKIP_S3=1``; otherwise a server that cannot start
fails them with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.servers.s3server import S3Server, S3ServerError, start_s3_server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    if os.environ.get("PACH_SKIP_S3") == "1":
        pytest.skip("PACH_SKIP_S3=1: S3 tests skipped")
    try:
        server = start_s3_server(tmp_path_factory.mktemp("s3server"))
    except S3ServerError as exc:
        pytest.fail(f"the S3 test server (radosgw) could not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
