"""Whole objects in S3 buckets: stat, get, put, list, copy and delete (obstore).

Every function takes :class:`~pipeline.storage.location.S3Uri` locations and raises
:class:`~pipeline.storage.errors.StorageError` with one line naming the URI and the
reason: a missing bucket, a missing key, no credentials, an unreachable endpoint, a
refused request. A put is one request, so an object is complete or absent (S3 never
shows a partly written object); there is no rename, so a "directory" is published by
server-side copies (:func:`copy_objects`).

Clients are cached per bucket, key prefix and :class:`~pipeline.storage.aws.AwsSettings`,
so a changed environment gets new ones.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import obstore
from obstore.exceptions import (
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from pipeline.storage.aws import AwsSettings
from pipeline.storage.errors import MissingObjectError, StorageError
from pipeline.storage.location import S3Uri

_PARALLEL = 16  # concurrent requests of bulk copies, deletes and reads
_DELETE_BATCH = 1000  # keys per bulk delete request (the S3 limit)


@dataclass(frozen=True)
class ObjectInfo:
    """Size, modification time and entity tag of one object."""

    uri: S3Uri
    size: int
    mtime_ns: int
    etag: str


@lru_cache(maxsize=64)
def _store(bucket: str, prefix: str, settings: AwsSettings) -> S3Store:
    return S3Store(bucket, prefix=prefix or None, **settings.obstore_config())


def s3_store(uri: S3Uri, *, prefix: str = "") -> S3Store:
    """The obstore client of ``uri``'s bucket (keys below ``prefix`` when given)."""
    settings = AwsSettings.from_env()
    settings.require_credentials(uri)
    return _store(uri.bucket, prefix, settings)


# --------------------------------------------------------------------------- errors

_CODE = re.compile(r"<Code>([^<]+)</Code>")
# obstore raises the builtin FileNotFoundError for a missing object (its own class exists too)
_NOT_FOUND = (NotFoundError, FileNotFoundError)


def _bucket_missing(uri: S3Uri) -> bool:
    """Whether the bucket itself is missing (a HEAD on a missing bucket is a bare 404)."""
    try:
        next(iter(obstore.list(s3_store(uri), prefix=uri.prefix or None, chunk_size=1)), None)
    except Exception as exc:  # noqa: BLE001 - any failure here only means "not known"
        return "NoSuchBucket" in str(exc)
    return False


def reason(exc: BaseException, uri: S3Uri) -> str:
    """One line saying why a request about ``uri`` failed."""
    text = str(exc)
    code = _CODE.search(text)
    if code and code.group(1) == "NoSuchBucket" or (
            isinstance(exc, _NOT_FOUND) and _bucket_missing(uri)):
        return f"bucket '{uri.bucket}' does not exist"
    if isinstance(exc, _NOT_FOUND):
        return f"no such key '{uri.key}' in bucket '{uri.bucket}'"
    if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)) or (
            code and code.group(1) in ("AccessDenied", "InvalidAccessKeyId",
                                       "SignatureDoesNotMatch", "ExpiredToken")):
        what = code.group(1) if code else type(exc).__name__
        return (f"access denied ({what}); check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY "
                "and the bucket's policy")
    if "error sending request" in text or "Connect" in text or "dns error" in text:
        endpoint = AwsSettings.from_env().endpoint_label
        return f"cannot reach the S3 endpoint {endpoint} (connection failed)"
    if code:
        return f"S3 refused the request ({code.group(1)})"
    first = " ".join(text.strip().splitlines()[0].split()) if text.strip() else ""
    return f"{type(exc).__name__}: {first[:200]}"


@contextmanager
def failures(uri: S3Uri) -> Iterator[None]:
    """Turn an obstore failure inside the block into a StorageError naming ``uri``
    (MissingObjectError for a missing key)."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        if not isinstance(exc, (obstore.exceptions.BaseError, *_NOT_FOUND)):
            raise  # a local failure (disk full, a local permission) stays what it is
        why = reason(exc, uri)
        kind = MissingObjectError if why.startswith("no such key") else StorageError
        raise kind(str(uri), why) from exc


# --------------------------------------------------------------------------- single objects

def stat(uri: S3Uri) -> ObjectInfo:
    """Size, time and tag of the object ``uri``; StorageError when it does not exist."""
    with failures(uri):
        meta = obstore.head(s3_store(uri), uri.key)
    modified = meta["last_modified"]
    return ObjectInfo(uri, int(meta["size"]), int(modified.timestamp() * 1e9),
                      str(meta.get("e_tag") or ""))


def exists(uri: S3Uri) -> bool:
    """Whether the object ``uri`` exists (one request; other failures raise)."""
    with failures(uri):
        try:
            obstore.head(s3_store(uri), uri.key)
        except _NOT_FOUND:
            return False
    return True


def get_bytes(uri: S3Uri) -> bytes:
    """The whole object ``uri``."""
    with failures(uri):
        return bytes(obstore.get(s3_store(uri), uri.key).bytes())


def put_bytes(uri: S3Uri, data: bytes) -> None:
    """Write the object ``uri`` in one request (complete or absent)."""
    with failures(uri):
        obstore.put(s3_store(uri), uri.key, data)


def put_file(uri: S3Uri, path: str | os.PathLike[str]) -> None:
    """Upload a local file as the object ``uri`` (large files as one multipart upload,
    which also appears only when complete)."""
    with failures(uri):
        obstore.put(s3_store(uri), uri.key, Path(path))


def download(uri: S3Uri, path: str | os.PathLike[str]) -> Path:
    """Copy the object ``uri`` to the local file ``path`` (written beside it, then renamed)."""
    target = Path(path)
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with failures(uri), open(part, "wb") as fh:
            fh.writelines(obstore.get(s3_store(uri), uri.key).stream(min_chunk_size=8 << 20))
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return target


class _Reader(io.RawIOBase):
    """obstore's readable file as a binary file object (``read`` returns ``bytes``)."""

    def __init__(self, uri: S3Uri, raw: Any) -> None:
        self.uri, self._raw = uri, raw

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        with failures(self.uri):
            return bytes(self._raw.read(size) if size is not None and size >= 0
                         else self._raw.read())

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        self._raw.close()
        super().close()


@contextmanager
def open_reader(uri: S3Uri, *, buffer_size: int = 1 << 20) -> Iterator[BinaryIO]:
    """A seekable read-only binary file over the object ``uri`` (ranged requests)."""
    with failures(uri):
        raw = obstore.open_reader(s3_store(uri), uri.key, buffer_size=buffer_size)
    reader = _Reader(uri, raw)
    try:
        yield reader  # type: ignore[misc]
    finally:
        reader.close()


def delete(uri: S3Uri) -> None:
    """Remove the object ``uri`` (nothing happens when it does not exist)."""
    with failures(uri):
        obstore.delete(s3_store(uri), uri.key)


# --------------------------------------------------------------------------- prefixes

def list_objects(prefix: S3Uri) -> list[ObjectInfo]:
    """Every object below ``prefix`` (as under a directory), in key order."""
    found = []
    with failures(prefix):
        for chunk in obstore.list(s3_store(prefix), prefix=prefix.prefix or None):
            for meta in chunk:
                found.append(ObjectInfo(S3Uri(prefix.bucket, meta["path"]), int(meta["size"]),
                                        int(meta["last_modified"].timestamp() * 1e9),
                                        str(meta.get("e_tag") or "")))
    return sorted(found, key=lambda o: o.uri.key)


def is_prefix(uri: S3Uri) -> bool:
    """Whether any object lies below ``uri`` (it is used like a directory)."""
    with failures(uri):
        first = next(iter(obstore.list(s3_store(uri), prefix=uri.prefix or None,
                                       chunk_size=1)), [])
    return bool(first)


def delete_objects(uris: Iterable[S3Uri]) -> int:
    """Remove several objects of one bucket (bulk requests); returns how many."""
    uris = list(uris)
    if not uris:
        return 0
    keys = [u.key for u in uris]
    with failures(uris[0].parent):
        for i in range(0, len(keys), _DELETE_BATCH):
            obstore.delete(s3_store(uris[0]), keys[i:i + _DELETE_BATCH])
    return len(keys)


def delete_prefix(prefix: S3Uri) -> int:
    """Remove every object below ``prefix``; returns how many there were."""
    return delete_objects(o.uri for o in list_objects(prefix))


def copy_objects(pairs: Iterable[tuple[S3Uri, S3Uri]]) -> int:
    """Server-side copies ``source -> target`` within one bucket, in parallel."""
    pairs = list(pairs)

    def one(pair: tuple[S3Uri, S3Uri]) -> None:
        source, target = pair
        with failures(source):
            obstore.copy(s3_store(source), source.key, target.key)

    with ThreadPoolExecutor(max_workers=_PARALLEL, thread_name_prefix="s3-copy") as pool:
        list(pool.map(one, pairs))
    return len(pairs)


def get_many(uris: Iterable[S3Uri]) -> list[bytes | None]:
    """Several whole objects read in parallel; None for one that vanished meanwhile."""
    def one(uri: S3Uri) -> bytes | None:
        try:
            return get_bytes(uri)
        except MissingObjectError:
            return None

    with ThreadPoolExecutor(max_workers=_PARALLEL, thread_name_prefix="s3-get") as pool:
        return list(pool.map(one, list(uris)))
