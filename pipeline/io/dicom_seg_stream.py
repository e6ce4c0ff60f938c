"""The bit-packed frames of a BINARY DICOM-SEG, streamed from a label volume slab by slab.

A BINARY Segmentation stores one frame per (segment, slice) where the segment occurs,
each frame ``rows x columns`` bits, packed contiguously in frame order (little-endian
bit order: pixel ``i`` of the whole Pixel Data is bit ``i % 8`` of byte ``i // 8``).
When ``rows * columns`` is not a multiple of 8, a frame starts inside a byte and the
bits carry on across frames, without padding between them. The value is padded to an
even length with one zero byte.

:class:`LabelFrames` reads the labels ``(slices, rows, columns)`` slab by slab;
:meth:`LabelFrames.presence` is the first pass (which segments occur in which slice: the
frames a SEG keeps), :func:`frame_plan` reads the frame order back from a Segmentation's
functional groups, and :func:`append_pixel_data` is the second pass: it writes the Pixel
Data element at the end of an open file, each frame at its own bit offset, so memory
stays bounded by one slab whatever the order of the frames.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pydicom

from pipeline.heap import release_free_memory
from segcore.errors import InputError

PIXEL_DATA = 0x7FE00010
"""Tag of (7FE0,0010) Pixel Data."""
MAX_VALUE_LENGTH = 2**32 - 2
"""Longest even length a 32-bit explicit-VR value can state (0xFFFFFFFF is "undefined")."""
GROUP = 2**22
"""Most voxels of frames handled at a time (4 Mi: 16 frames of 512 x 512)."""
FEW = 16
"""Up to this many classes, presence compares class by class; beyond, it counts."""


@dataclass(frozen=True)
class LabelFrames:
    """Class ids of a series read slab by slab as SEG frames.

    Parameters
    ----------
    slab : callable
        ``slab(k0, k1)`` returns the class ids of slices ``k0:k1`` in the stored axis
        order, ``(columns, rows, k1 - k0)`` ndarray of integers.
    shape : tuple of int
        ``(columns, rows, slices)`` of the series.
    top : int
        Largest class id (the class table's); ids outside ``0..top`` are refused.
    nodata : int, optional
        Class id of voxels outside the valid region: read as background (0).
    max_voxels : int
        Most voxels read from ``slab`` at a time (at least one slice).
    where : str
        What an error names (the output file).
    """

    slab: Callable[[int, int], np.ndarray]
    shape: tuple[int, int, int]
    top: int
    nodata: int | None
    max_voxels: int
    where: str

    @property
    def step(self) -> int:
        """Slices per slab."""
        columns, rows, _ = self.shape
        return max(1, int(self.max_voxels) // (rows * columns))

    def slabs(self) -> range:
        """First slice of each slab."""
        return range(0, self.shape[2], self.step)

    def groups(self) -> Iterator[tuple[int, np.ndarray]]:
        """The series slab by slab, as ``(first slice, frames)``: ``(slices, rows,
        columns)`` class ids of at most :data:`GROUP` voxels (a copy: nodata as 0);
        InputError naming :attr:`where` for ids outside ``0..top``.

        Frames are transposed from a slab a few at a time, so the slab is the only
        large array held (no second slab-sized copy)."""
        columns, rows, n = self.shape
        size = max(1, GROUP // (rows * columns))
        for k0 in self.slabs():
            block = self.slab(k0, min(n, k0 + self.step))  # (columns, rows, slices)
            for j0 in range(0, block.shape[2], size):
                frames = np.array(np.transpose(block[:, :, j0: j0 + size], (2, 1, 0)),
                                  order="C")
                if self.nodata is not None:
                    frames[frames == self.nodata] = 0
                if frames.size and (frames.min() < 0 or frames.max() > self.top):
                    raise InputError(self.where, f"class ids {int(frames.min())}.."
                                     f"{int(frames.max())}; expected 0..{self.top} "
                                     "(the class table)")
                yield k0 + j0, frames
            del block
            release_free_memory()  # the slab read's decode buffers: flat over the series

    def presence(self) -> np.ndarray:
        """``(slices, top + 1)`` bool: whether class ``c`` occurs in slice ``k`` (one pass
        over the slabs, checking the class ids)."""
        present = np.zeros((self.shape[2], self.top + 1), bool)
        for k0, frames in self.groups():
            flat = frames.reshape(len(frames), -1)
            if self.top <= FEW:  # a comparison a class, vectorised over the frames
                for c in range(1, self.top + 1):
                    present[k0: k0 + len(flat), c] = (flat == c).any(axis=1)
                continue
            for j, frame in enumerate(flat):  # a count a frame, in pieces (int64 copies)
                for i in range(0, frame.size, GROUP // 64):
                    present[k0 + j] |= np.bincount(frame[i: i + GROUP // 64],
                                                   minlength=self.top + 1) > 0
        return present


def frame_plan(seg: pydicom.Dataset, sources: dict[tuple[str, int | None], int]
               ) -> list[tuple[int, int]]:
    """``(segment number, slice)`` of every frame of a BINARY Segmentation, in frame order.

    Parameters
    ----------
    seg : pydicom.Dataset
        A Segmentation with per-frame functional groups (its frames derive from source
        frames: DerivationImageSequence).
    sources : dict
        Slice index of each source frame, by ``(SOPInstanceUID, frame index)``; the index
        is 0-based for a multi-frame source, None for a single-frame one.

    Returns
    -------
    list of (int, int)
    """
    shared = seg.SharedFunctionalGroupsSequence[0]
    plan = []
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        identification = item.get("SegmentIdentificationSequence") or \
            shared.get("SegmentIdentificationSequence")  # one segment: shared by all
        derivation = item.get("DerivationImageSequence")
        if not identification or not derivation:
            raise ValueError(f"SEG frame {i + 1} has no segment or no source reference")
        ref = derivation[0].SourceImageSequence[0]
        frame = ref.get("ReferencedFrameNumber")
        key = (str(ref.ReferencedSOPInstanceUID), None if frame is None else int(frame) - 1)
        plan.append((int(identification[0].ReferencedSegmentNumber), sources[key]))
    return plan


def pixel_data_length(frames: int, rows: int, columns: int) -> int:
    """Bytes of the Pixel Data value of ``frames`` bit-packed frames, padded to even."""
    length = -(-frames * rows * columns // 8)
    return length + length % 2


def _or_bits(fh: BinaryIO, start: int, bit0: int, mask: np.ndarray) -> None:
    """OR the bits of ``mask`` (flat bool) into the file at bit ``bit0`` of the value that
    starts at byte ``start``; bytes shared with neighbouring frames keep their bits."""
    shift = bit0 % 8
    bits = np.concatenate([np.zeros(shift, bool), mask]) if shift else mask
    packed = np.packbits(bits, bitorder="little")
    pos = start + bit0 // 8
    shared = {0} if shift else set()
    if bits.size % 8:
        shared.add(packed.size - 1)
    for i in sorted(shared):  # the partial bytes at either end
        fh.seek(pos + i)
        packed[i] |= fh.read(1)[0]
    fh.seek(pos)
    fh.write(packed.tobytes())


def append_pixel_data(fh: BinaryIO, plan: Sequence[tuple[int, int]], labels: LabelFrames,
                      present: np.ndarray) -> int:
    """Append the (7FE0,0010) Pixel Data element, explicit VR little endian, to ``fh``
    (positioned at the end of a dataset written without it) and stream the frames of
    ``plan`` into it from ``labels``, one slab at a time.

    Parameters
    ----------
    fh : binary file
        Open for reading and writing (``r+b``).
    plan : sequence of (int, int)
        ``(segment number, slice)`` of each frame, in frame order (:func:`frame_plan`).
    labels : LabelFrames
        The class ids.
    present : (slices, top + 1) ndarray of bool
        :meth:`LabelFrames.presence`: frames of absent segments are left zero unwritten.

    Returns
    -------
    int
        The value's length in bytes.
    """
    columns, rows, _ = labels.shape
    size = rows * columns
    length = pixel_data_length(len(plan), rows, columns)
    if length > MAX_VALUE_LENGTH:
        raise InputError(labels.where, f"{len(plan)} SEG frames of {rows} x {columns} need "
                         f"{length} bytes of Pixel Data; at most {MAX_VALUE_LENGTH} fit")
    fh.write(struct.pack("<HH2sHI", PIXEL_DATA >> 16, PIXEL_DATA & 0xFFFF, b"OB", 0, length))
    start = fh.tell()
    if length:  # zero-filled to its end: padding and empty frames stay zero
        fh.seek(start + length - 1)
        fh.write(b"\x00")
    by_slice: dict[int, list[tuple[int, int]]] = {}
    for j, (segment, k) in enumerate(plan):
        if present[k, segment]:
            by_slice.setdefault(k, []).append((j, segment))
    for k0, frames in labels.groups():
        for i, frame in enumerate(frames):
            for j, segment in by_slice.get(k0 + i, ()):
                _or_bits(fh, start, j * size, (frame == segment).ravel())
    fh.seek(start + length)
    return length


__all__ = ["GROUP", "PIXEL_DATA", "LabelFrames", "append_pixel_data", "frame_plan", "pixel_data_length"]
