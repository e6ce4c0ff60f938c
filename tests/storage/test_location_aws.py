"""Locations and the AWS environment: parsing, joining, and the options each client gets."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from pipeline.storage import S3Uri, parse_location
from pipeline.storage.aws import AwsSettings
from segcore.errors import ConfigError


@pytest.mark.parametrize("text, bucket, key", [
    ("s3://bkt/a/b.tif", "bkt", "a/b.tif"),
    ("s3://bkt/dir/", "bkt", "dir"),
    ("S3://bkt//a///b", "bkt", "a/b"),
    ("s3://my.bucket-1", "my.bucket-1", ""),
])
def test_s3_uris_parse_to_bucket_and_normalised_key(text, bucket, key):
    uri = parse_location(text)
    assert (uri.bucket, uri.key) == (bucket, key)
    assert parse_location(str(uri)) == uri
    assert parse_location(Path(text)) == uri  # pathlib folds '//' of a URI into '/'


@pytest.mark.parametrize("text, words", [
    ("s3://", "the bucket name is missing"),
    ("s3://Bad_Bucket/k", "expected a bucket name of 3-63 lower-case letters"),
    ("s3://ab/k", "got 'ab'"),
    ("s3://bkt/a/../b", "without '.' or '..' segments"),
    ("gs://bkt/k", "unsupported storage scheme 'gs'"),
    ("https://host/k.tif", "unsupported storage scheme 'https'"),
])
def test_malformed_locations_are_config_errors_naming_them(text, words):
    with pytest.raises(ConfigError) as info:
        parse_location(text)
    assert words in str(info.value) and str(info.value).startswith(text[:5])


def test_s3_uris_compose_like_paths():
    root = S3Uri("bkt", "out")
    scene = root / "s1" / "report.json"
    assert str(scene) == "s3://bkt/out/s1/report.json" and scene.name == "report.json"
    assert scene.parent.parent == root and root.prefix == "out/" and S3Uri("bkt").prefix == ""
    assert scene.relative_to(root) == PurePosixPath("s1/report.json")
    with pytest.raises(ValueError):
        S3Uri("bkt", "outside/x").relative_to(root)
    with pytest.raises(ValueError):  # a sibling sharing the prefix text is not below it
        S3Uri("bkt", "out2/x").relative_to(root)


def test_standard_environment_maps_onto_gdal_and_obstore_options():
    env = {"AWS_ENDPOINT_URL": "https://minio.example:9443/", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "secret-value", "AWS_SESSION_TOKEN": "t"}
    settings = AwsSettings.from_env(env)
    assert settings.region == "us-east-1" and "secret-value" not in repr(settings)
    gdal = settings.gdal_options()
    assert gdal["AWS_S3_ENDPOINT"] == "minio.example:9443" and gdal["AWS_HTTPS"] == "YES"
    assert gdal["AWS_VIRTUAL_HOSTING"] == "FALSE"
    obstore = settings.obstore_config()
    assert obstore["config"]["endpoint"] == "https://minio.example:9443"
    assert obstore["config"]["session_token"] == "t"
    assert obstore["client_options"]["allow_http"] is False
    # AWS S3 itself: no endpoint options at all; the service-specific variable wins
    plain = AwsSettings.from_env({"AWS_DEFAULT_REGION": "eu-west-1"})
    assert "AWS_S3_ENDPOINT" not in plain.gdal_options() and plain.region == "eu-west-1"
    assert "endpoint" not in plain.obstore_config()["config"]
    both = AwsSettings.from_env({"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3":
                                 "http://b:2", "AWS_REGION": "x-1", "AWS_DEFAULT_REGION": "y"})
    assert both.endpoint_url == "http://b:2" and both.region == "x-1"
    assert both.gdal_options()["AWS_HTTPS"] == "NO"


@pytest.mark.parametrize("endpoint", ["127.0.0.1:9000", "ftp://host", "http://"])
def test_an_endpoint_without_scheme_or_host_is_refused(endpoint):
    with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL: expected http://HOST"):
        AwsSettings.from_env({"AWS_ENDPOINT_URL": endpoint})
