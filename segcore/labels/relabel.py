"""Sequential relabelling of instance ids and sorted id lookup tables.

Dtype rules
-----------
* :func:`relabel_sequential` follows :func:`skimage.segmentation.relabel_sequential`
  exactly: the output keeps the input dtype when the largest new id fits
  strictly below that dtype's maximum, otherwise it widens to
  ``np.min_scalar_type(largest new id)`` (an unsigned type). ``int8`` input
  whose largest new id is 127 thus becomes ``uint8``; ``uint8`` input with
  255 objects and ``offset=2`` becomes ``uint16``.
* :func:`label_dtype` (used by stitching) picks the smallest of ``uint16``,
  ``uint32``, ``uint64`` that holds the largest id, or checks a requested
  integer dtype and raises :class:`~segcore.errors.ConfigError` on overflow.
* Ids are compared as ``uint64``: inputs may use the full ``uint64`` range;
  negative ids raise. No table of size ``max_id`` is ever allocated; lookups
  use :func:`numpy.searchsorted` over the sorted keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from segcore.errors import ConfigError

__all__ = ["LabelMap", "label_dtype", "relabel_sequential"]

_UINT64_MAX = int(np.iinfo(np.uint64).max)
_STITCH_DTYPES = (np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.uint64))


def label_dtype(max_id: int, dtype: DTypeLike | None = None) -> np.dtype[Any]:
    """Integer dtype for labels whose largest id is ``max_id``.

    Parameters
    ----------
    max_id : int
        Largest id to store, ``>= 0``.
    dtype : dtype, optional
        Requested dtype; by default the smallest of uint16, uint32, uint64
        that holds ``max_id``.

    Raises
    ------
    ConfigError
        If ``dtype`` is not an integer dtype or cannot hold ``max_id``.

    Examples
    --------
    >>> label_dtype(65535), label_dtype(65536), label_dtype(2**40)
    (dtype('uint16'), dtype('uint32'), dtype('uint64'))
    >>> label_dtype(300, "uint8")
    Traceback (most recent call last):
    ...
    segcore.errors.ConfigError: label dtype: uint8 holds ids up to 255, but 300 are needed; use uint16 or wider (or dtype=None)
    """
    max_id = int(max_id)
    if not 0 <= max_id <= _UINT64_MAX:
        raise ConfigError(f"label dtype: expected a largest id in [0, 2**64 - 1], received {max_id}")
    if dtype is None:
        return next(d for d in _STITCH_DTYPES if max_id <= np.iinfo(d).max)
    want = np.dtype(dtype)
    if want.kind not in "iu":
        raise ConfigError(f"label dtype: expected an integer dtype, received {want}")
    top = int(np.iinfo(want).max)
    if max_id > top:
        wider = label_dtype(max_id)
        raise ConfigError(
            f"label dtype: {want} holds ids up to {top}, but {max_id} are needed; "
            f"use {wider} or wider (or dtype=None)"
        )
    return want


def _as_uint64_ids(labels: ArrayLike, name: str) -> NDArray[np.uint64]:
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iu":
        raise ConfigError(f"{name}: expected an integer label array, received dtype {arr.dtype}")
    if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
        raise ConfigError(f"{name}: expected label ids >= 0, received {int(arr.min())}")
    return arr.astype(np.uint64, copy=False)


@dataclass(frozen=True)
class LabelMap:
    """Frozen lookup table ``key -> value`` over sorted ``uint64`` keys.

    Applied chunk by chunk (:meth:`apply`), so relabelling a scene never
    needs a scene-sized array nor a dense table of size ``max(key)``.
    Background ``0`` maps to ``0`` unless ``0`` is itself a key.

    Parameters
    ----------
    keys : (K,) ndarray
        Strictly increasing non-negative ids (stored as ``uint64``).
    values : (K,) ndarray of int
        New id of each key; their dtype is the output dtype.

    Examples
    --------
    >>> m = LabelMap(np.array([5, 2**63], np.uint64), np.array([1, 2], dtype=np.uint16))
    >>> m.apply(np.array([[0, 5], [2**63, 5]], dtype=np.uint64))
    array([[0, 1],
           [2, 1]], dtype=uint16)
    >>> m[2**63], len(m), m.dtype
    (2, 2, dtype('uint16'))
    """

    keys: NDArray[np.uint64]
    values: NDArray[Any]

    def __post_init__(self) -> None:
        keys = _as_uint64_ids(self.keys, "LabelMap.keys").ravel()
        values = np.asarray(self.values).ravel()
        if values.dtype.kind not in "iu":
            raise ConfigError(f"LabelMap.values: expected integers, received dtype {values.dtype}")
        if keys.shape != values.shape:
            raise ConfigError(
                f"LabelMap: expected as many values as keys, received {values.size} "
                f"values for {keys.size} keys"
            )
        if keys.size > 1 and not bool(np.all(keys[1:] > keys[:-1])):
            raise ConfigError("LabelMap.keys: expected strictly increasing ids")
        keys.flags.writeable = False
        values = values.copy()
        values.flags.writeable = False
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "values", values)

    def __len__(self) -> int:
        return int(self.keys.size)

    @property
    def dtype(self) -> np.dtype[Any]:
        """Output dtype of :meth:`apply`."""
        return self.values.dtype

    def __getitem__(self, key: int) -> int:
        out = self.apply(np.array([key], dtype=np.uint64))
        return int(out[0])

    def __call__(self, labels: ArrayLike) -> NDArray[Any]:
        return self.apply(labels)

    def apply(self, labels: ArrayLike) -> NDArray[Any]:
        """Map every id of ``labels`` (any shape) through the table.

        Raises
        ------
        ConfigError
            If a non-zero id is not a key (the chunk does not belong to the
            id space this map was built for).
        """
        ids = _as_uint64_ids(labels, "LabelMap.apply labels")
        if self.keys.size == 0:
            idx = np.zeros(ids.shape, dtype=np.intp)
            found = np.zeros(ids.shape, dtype=bool)
        else:
            idx = np.searchsorted(self.keys, ids)
            np.minimum(idx, self.keys.size - 1, out=idx)
            found = self.keys[idx] == ids
        unknown = ~found & (ids != 0)
        if unknown.any():
            bad = np.unique(ids[unknown])
            raise ConfigError(
                f"LabelMap.apply: {bad.size} id(s) have no entry, e.g. "
                f"{bad[:5].tolist()}; build the map from every tile's id range"
            )
        out = (
            self.values[idx] if self.keys.size else np.zeros(ids.shape, self.values.dtype)
        )
        out[~found] = 0
        return out


def relabel_sequential(
    labels: ArrayLike, offset: int = 1
) -> tuple[NDArray[Any], LabelMap, LabelMap]:
    """Relabel ids to ``offset, offset + 1, ...`` in increasing order; 0 stays 0.

    Same result and dtype as :func:`skimage.segmentation.relabel_sequential`
    (see the module's dtype rules), with :class:`LabelMap` maps.

    Parameters
    ----------
    labels : ndarray of int
        Label image, ids ``>= 0``, any shape, not empty.
    offset : int, default 1
        First new id, ``>= 1``.

    Returns
    -------
    relabelled : ndarray
        Same shape as ``labels``.
    forward_map : LabelMap
        Original id -> new id (includes ``0 -> 0`` when 0 occurs).
    inverse_map : LabelMap
        New id -> original id, values in the input dtype.

    Raises
    ------
    ConfigError
        If ``offset < 1``, ``labels`` is empty, not integer, holds negative
        ids, or the new ids would exceed ``2**64 - 1``.

    Examples
    --------
    >>> out, fw, inv = relabel_sequential(np.array([1, 1, 5, 5, 8, 99, 42], dtype=np.uint8))
    >>> out
    array([1, 1, 2, 2, 3, 5, 4], dtype=uint8)
    >>> inv.apply(out)
    array([ 1,  1,  5,  5,  8, 99, 42], dtype=uint8)
    >>> relabel_sequential(np.arange(256, dtype=np.uint8), offset=2)[0].dtype
    dtype('uint16')
    """
    arr = np.asarray(labels)
    if int(offset) < 1:
        raise ConfigError(f"relabel_sequential offset: expected an int >= 1, received {offset!r}")
    if arr.size == 0:
        raise ConfigError("relabel_sequential labels: expected a non-empty array")
    ids = _as_uint64_ids(arr, "relabel_sequential labels")
    in_vals = np.unique(ids)
    has_zero = bool(in_vals[0] == 0)
    n_new = in_vals.size - int(has_zero)
    last = int(offset) + n_new - 1 if n_new else 0
    if last > _UINT64_MAX:
        raise ConfigError(
            f"relabel_sequential: the largest new id {last} exceeds 2**64 - 1; use a smaller offset"
        )
    required = np.min_scalar_type(last)
    if arr.dtype.itemsize < required.itemsize or last >= int(np.iinfo(arr.dtype).max):
        out_type = required
    else:
        out_type = arr.dtype
    new = np.arange(n_new, dtype=np.uint64) + np.uint64(offset)
    out_vals = np.concatenate([np.zeros(int(has_zero), np.uint64), new]).astype(out_type)
    forward = LabelMap(in_vals, out_vals)
    inverse = LabelMap(out_vals.astype(np.uint64), in_vals.astype(arr.dtype))
    return forward.apply(ids), forward, inverse
