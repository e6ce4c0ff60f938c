"""Conditional writes of small objects: create only if absent, replace only if unchanged.

S3 (since 2024) and S3-compatible servers that follow it honour the HTTP preconditions
``If-None-Match: *`` and ``If-Match: <etag>`` on ``PutObject``: the write happens only
when no object is there, or only when the object still has the entity tag the writer
read, and the server decides atomically. Two writers racing for the same condition
cannot both succeed. This is the compare-and-swap that scene locks on object storage
are built on (:mod:`pipeline.run.object_lock`).

* :func:`get_tagged` reads an object's bytes and entity tag in one request;
* :func:`put_if_absent` and :func:`put_if_match` write, returning the new entity tag,
  or None when the condition did not hold (someone else wrote first);
* :class:`ConditionalWritesUnsupported` is raised when the server answers that it does
  not implement the precondition headers (``NotImplemented``, HTTP 501).

A server that silently ignores the headers cannot be told apart from one that honours
them: on such a server these writes are plain writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import obstore
from obstore.exceptions import AlreadyExistsError, NotFoundError, PreconditionError

from pipeline.storage.errors import StorageError
from pipeline.storage.location import S3Uri
from pipeline.storage.objects import failures, s3_store

_NOT_FOUND = (NotFoundError, FileNotFoundError)  # obstore raises either for a missing key

# a concurrent conditional write on AWS S3 may be refused with 409 instead of 412
_CONFLICT_CODES = ("ConditionalRequestConflict", "OperationAborted")


class ConditionalWritesUnsupported(StorageError):
    """The server does not implement conditional writes (``If-None-Match``/``If-Match``)."""


@dataclass(frozen=True)
class Tagged:
    """An object's content and the entity tag of that content."""

    data: bytes
    etag: str


def get_tagged(uri: S3Uri) -> Tagged | None:
    """The object ``uri`` with its entity tag (one request), or None when it is absent."""
    with failures(uri):
        try:
            got = obstore.get(s3_store(uri), uri.key)
        except _NOT_FOUND:
            return None
        data = bytes(got.bytes())
    return Tagged(data, str(got.meta.get("e_tag") or ""))


def _unsupported(exc: BaseException) -> bool:
    text = str(exc)
    return "<Code>NotImplemented</Code>" in text or "501 Not Implemented" in text


def _conflict(exc: BaseException) -> bool:
    return any(f"<Code>{code}</Code>" in str(exc) for code in _CONFLICT_CODES)


def _put(uri: S3Uri, data: bytes, mode: object) -> str | None:
    try:
        with failures(uri):
            try:
                result = obstore.put(s3_store(uri), uri.key, data, mode=mode)
            except (AlreadyExistsError, PreconditionError, *_NOT_FOUND):
                return None  # another object is there, or ours changed or vanished
    except StorageError as exc:
        cause = exc.__cause__ or exc
        if _unsupported(cause):
            raise ConditionalWritesUnsupported(
                str(uri), "the server does not support conditional writes "
                "(If-None-Match/If-Match on PutObject)") from None
        if _conflict(cause):
            return None  # a concurrent conditional write won
        raise
    return str(result.get("e_tag") or "")


def put_if_absent(uri: S3Uri, data: bytes) -> str | None:
    """Create the object ``uri`` unless one exists (``If-None-Match: *``).

    Returns
    -------
    str or None
        The new object's entity tag; None when an object was already there.

    Raises
    ------
    ConditionalWritesUnsupported
        When the server does not implement the precondition.
    StorageError
        For any other failure.
    """
    return _put(uri, data, "create")


def put_if_match(uri: S3Uri, data: bytes, etag: str) -> str | None:
    """Replace the object ``uri`` only if its entity tag is still ``etag`` (``If-Match``).

    Returns
    -------
    str or None
        The new entity tag; None when the object changed or is gone.

    Raises
    ------
    ConditionalWritesUnsupported
        When the server does not implement the precondition.
    StorageError
        For any other failure.
    """
    return _put(uri, data, {"e_tag": etag})
