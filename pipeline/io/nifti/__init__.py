"""NIfTI adapter: validate, describe, stream and write volumes (bounded memory).

A volume is never read whole: :func:`open_volume` checks a ``.nii``/``.nii.gz``
file and returns a :class:`VolumeInfo`; :class:`VolumeReader` streams it once
in file order (:meth:`VolumeReader.blocks`) or reads canonical regions;
:func:`write_label_volume` writes a label volume on the input's exact grid,
one slab at a time.

Canonical orientation
---------------------
The pipeline works on arrays with axes ``(Z, Y, X)``: nibabel's
closest-canonical RAS+ orientation of the voxel array (``io_orientation`` of
the affine, so only axis permutations and flips, never resampling), transposed
to ``(S, A, R)``. :meth:`VolumeInfo.canonical_affine` maps canonical voxels to
the same world points as :attr:`VolumeInfo.affine` maps the stored voxels.

Validation
----------
:func:`open_volume` reads the header bytes itself (with ``gzip`` for
compressed files, detected from the content, not the suffix), parses them with
nibabel's header classes and reports the first problem as one
:class:`~segcore.errors.InputError`: empty file, not NIfTI (text, random
bytes, Analyze, ``.hdr/.img`` pairs), CIFTI-2 or 5-D+ files, unsupported data
types (complex, RGB), a singular or non-finite affine, absurd declared sizes
(above :data:`MAX_IMAGE_BYTES`, or more than a gzip file of that size can
expand to), and files that end before their image data does. For ``.nii.gz``
the last check compares the gzip trailer's ISIZE field (uncompressed size
modulo 2**32) with the declared size and decompresses the file once, counting
bytes, only when they differ (truncated, multi-member or padded files), so an
intact file costs two small reads. A file truncated after it was opened still
gives ``InputError(path, "truncated: ...")`` from the reader.

Integrity
---------
gzip protects each member with a CRC-32 of its data and its length (ISIZE), but
checks them only when the end of the member is read. :meth:`VolumeReader.blocks`
therefore reads a ``.nii.gz`` to its very end after the last block (nothing more
to decompress unless channels were left out), so a file whose deflate stream
decodes but whose data or trailer is damaged fails with one
``InputError(path, "corrupt: the gzip trailer does not match ...")`` instead of
being segmented. gzip computes the CRC while decompressing anyway: the check
costs nothing measurable (256³ int16, 23 MB file: 0.32 s to stream with or
without it). :meth:`VolumeReader.read` of a region stops early and cannot check.

Scaling
-------
``scl_slope``/``scl_inter`` are applied as nibabel does (no scaling when the
slope is 0, NaN, or slope 1 with intercept 0), but the result dtype is the
smallest float that holds the stored values exactly (``float32`` for 8/16-bit
integers and float32 data, ``float64`` for 32/64-bit integers and float64):
nibabel itself always returns float64.
"""

from pipeline.io.nifti.reader import VolumeReader
from pipeline.io.nifti.validate import open_label_volume, open_volume
from pipeline.io.nifti.volume import (
    CIFTI_INTENTS, GZIP_MAX_RATIO, MAX_IMAGE_BYTES, NIFTI_INTENT_LABEL, SUPPORTED_DTYPES,
    VolumeInfo, canonical_axes,
)
from pipeline.io.nifti.writer import write_label_volume

__all__ = [
    "CIFTI_INTENTS",
    "GZIP_MAX_RATIO",
    "MAX_IMAGE_BYTES",
    "NIFTI_INTENT_LABEL",
    "SUPPORTED_DTYPES",
    "VolumeInfo",
    "VolumeReader",
    "canonical_axes",
    "open_label_volume",
    "open_volume",
    "write_label_volume",
]
