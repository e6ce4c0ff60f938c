"""The standard AWS environment, mapped onto the clients that read object storage.

A user sets only what every AWS tool reads: ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``) for an S3-compatible server such as MinIO or Ceph,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN`` for temporary
credentials) and ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``). :class:`AwsSettings` reads
them once and translates them for each client:

* obstore (Zarr stores and whole objects): :meth:`AwsSettings.obstore_config`;
* GDAL's ``/vsis3/`` (GeoTIFF reads): :meth:`AwsSettings.gdal_options`, which spells
  the endpoint the way GDAL wants it (``AWS_S3_ENDPOINT`` as ``host:port`` without a
  scheme, ``AWS_HTTPS=NO`` for an ``http://`` endpoint and path-style addressing,
  ``AWS_VIRTUAL_HOSTING=FALSE``, for any custom endpoint);
  :func:`pipeline.storage.gdal.gdal_env` applies them.

Examples
--------
>>> env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ACCESS_KEY_ID": "k",
...        "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "eu-west-1"}
>>> settings = AwsSettings.from_env(env)
>>> settings.region, settings.endpoint_url
('eu-west-1', 'http://127.0.0.1:9000')
>>> sorted(settings.gdal_options().items())[:3]
[('AWS_HTTPS', 'NO'), ('AWS_REGION', 'eu-west-1'), ('AWS_S3_ENDPOINT', '127.0.0.1:9000')]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from pipeline.storage.errors import StorageError
from segcore.errors import ConfigError

DEFAULT_REGION = "us-east-1"
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")  # first set one wins
# A few quick retries: a refused connection or a missing bucket should fail in seconds,
# while a throttled request (503 SlowDown) still gets another chance.
_RETRY = {"max_retries": 4, "retry_timeout": timedelta(seconds=120),
          "backoff": {"init_backoff": timedelta(milliseconds=100),
                      "max_backoff": timedelta(seconds=5), "base": 2.0}}


@dataclass(frozen=True)
class AwsSettings:
    """Endpoint, credentials and region from the standard AWS environment variables."""

    endpoint_url: str | None
    access_key_id: str | None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str = DEFAULT_REGION

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AwsSettings:
        """Read the settings (``os.environ`` by default); ConfigError for a bad endpoint."""
        env = os.environ if env is None else env
        endpoint = next((env[v].strip() for v in ENDPOINT_VARIABLES if env.get(v, "").strip()),
                        None)
        if endpoint is not None:
            _check_endpoint(endpoint)
        return cls(endpoint_url=endpoint.rstrip("/") if endpoint else None,
                   access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
                   secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
                   session_token=env.get("AWS_SESSION_TOKEN") or None,
                   region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
                   or DEFAULT_REGION)

    def require_credentials(self, location: object) -> None:
        """StorageError naming ``location`` unless a key pair is set."""
        if not (self.access_key_id and self.secret_access_key):
            raise StorageError(str(location), "no AWS credentials: set AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for a server "
                               "other than AWS S3)")

    @property
    def endpoint_label(self) -> str:
        """The endpoint for messages (AWS's own when none is set)."""
        return self.endpoint_url or f"AWS S3 ({self.region})"

    def obstore_config(self) -> dict[str, Any]:
        """Keyword arguments for :class:`obstore.store.S3Store` (besides bucket and prefix)."""
        config: dict[str, Any] = {"region": self.region}
        if self.access_key_id:
            config["access_key_id"] = self.access_key_id
        if self.secret_access_key:
            config["secret_access_key"] = self.secret_access_key
        if self.session_token:
            config["session_token"] = self.session_token
        client: dict[str, Any] = {"connect_timeout": timedelta(seconds=10)}
        if self.endpoint_url:
            config["endpoint"] = self.endpoint_url
            config["virtual_hosted_style_request"] = False
            client["allow_http"] = self.endpoint_url.lower().startswith("http://")
        return {"config": config, "client_options": client, "retry_config": _RETRY}

    def gdal_options(self) -> dict[str, str]:
        """GDAL configuration options for ``/vsis3/`` (credentials GDAL reads from the
        environment itself)."""
        options = {"AWS_REGION": self.region, "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
        if self.endpoint_url:
            parts = urlsplit(self.endpoint_url)
            options["AWS_S3_ENDPOINT"] = parts.netloc + parts.path.rstrip("/")
            options["AWS_HTTPS"] = "NO" if parts.scheme.lower() == "http" else "YES"
            options["AWS_VIRTUAL_HOSTING"] = "FALSE"
        return options


def _check_endpoint(endpoint: str) -> None:
    parts = urlsplit(endpoint)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"AWS_ENDPOINT_URL: expected http://HOST[:PORT] or "
                          f"https://HOST[:PORT], got {endpoint!r}")
