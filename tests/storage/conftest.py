"""A local S3 server (moto's server mode on 127.0.0.1) and buckets on it.

The standard AWS environment (``AWS_ENDPOINT_URL``, a key pair, ``AWS_REGION``) is set
when this file is imported, at collection time, before any test starts Ray: Ray's
worker processes (the model actors, which open stores on the server themselves) inherit
the environment of the process that starts the runtime, as they do in ``segpipe run``.
The server itself starts on first use, on the loopback port chosen here. Tests that need it
live in ``tests/storage`` (importing the fixture into another module would define a second
session server on the same port).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

import pytest


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PORT = _free_loopback_port()
ENDPOINT = f"http://127.0.0.1:{PORT}"
AWS_ENV = {"AWS_ENDPOINT_URL": ENDPOINT, "AWS_ACCESS_KEY_ID": "segpipe-test",
           "AWS_SECRET_ACCESS_KEY": "segpipe-test-secret", "AWS_REGION": "us-east-1"}
for _name in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
    os.environ.pop(_name, None)
os.environ.update(AWS_ENV)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on ``127.0.0.1:PORT`` for the session; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request
    with socket.socket() as sock:  # a server that cannot bind waits forever: fail at once
        try:
            sock.bind(("127.0.0.1", PORT))
        except OSError as exc:
            pytest.fail(f"S3 test server: 127.0.0.1:{PORT} is taken ({exc}); was the "
                        "s3_server fixture imported into a module outside tests/storage?")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=PORT, verbose=False)
    server.start()
    yield ENDPOINT
    server.stop()


@pytest.fixture()
def s3_env(s3_server, monkeypatch):
    """The AWS environment of the server, restored after the test (tests may change it)."""
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    return dict(AWS_ENV)


def make_bucket(name: str | None = None) -> str:
    """Create a bucket on the server (boto3, installed with moto); returns its name."""
    import boto3

    bucket = name or f"segpipe-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=ENDPOINT, region_name=AWS_ENV["AWS_REGION"],
                 aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"]
                 ).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture()
def bucket(s3_env) -> str:
    """A fresh empty bucket."""
    return make_bucket()
