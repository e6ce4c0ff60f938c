"""The streamed DICOM-SEG writer (pipeline.io.dicom_seg.write_dicom_seg) against highdicom's
own encoding of the whole label array (write_dicom_seg_whole).

Both files are read with pydicom: every data element is equal but the new UIDs and the
dates and times, and the Pixel Data is byte-identical but for the trailing pad byte of an
odd-length value (highdicom pads with an ASCII "0", DICOM and the streamed writer with a
zero byte). Series come from ``dicom_make``: plain, double-oblique, gantry-tilted,
enhanced multi-frame, frames whose size is not a multiple of 8 bits, absent classes, one
class, no labels at all, and more than 255 classes. The slab reader is checked for the
slices it is asked for, and tracemalloc shows the streamed writer's memory does not hold
the series.
"""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from pipeline.formats.dicom import DICOM
from pipeline.io.dicom_seg import read_seg_slab, write_dicom_seg, write_dicom_seg_whole
from pipeline.io.dicom_seg_stream import (
    LabelFrames,
    append_pixel_data,
    pixel_data_length,
)
from tests.pipeline.formats.dicom_make import (
    Geometry,
    Options,
    oblique,
    tilted,
    write_series,
)

NEW_UIDS = {"SOPInstanceUID", "SeriesInstanceUID", "MediaStorageSOPInstanceUID",
            "DimensionOrganizationUID", "FileMetaInformationGroupLength"}
"""New for every SEG written, and the file meta's length (that of the new UIDs): the rest
must be equal."""
NODATA = 255


def _classes(n: int) -> list[dict]:
    return [{"id": i, "name": f"class {i}", "isthing": i % 2 == 0,
             "color": (i % 256, 255 - i % 256, 7)} for i in range(n)]


def _labels(case: str, shape: tuple[int, int, int]) -> tuple[np.ndarray, int]:
    """Class ids ``(columns, rows, slices)`` for a case and the number of classes."""
    rng = np.random.default_rng(len(case))
    if case == "many":  # 301 classes: uint16, most absent from most slices
        return rng.integers(0, 301, shape).astype(np.uint16), 301
    labels = rng.integers(0, 3, shape).astype(np.uint8)
    if case == "empty":
        return np.zeros(shape, np.uint8), 3
    if case == "one":
        return (labels > 0).astype(np.uint8), 2
    labels[:, :, 2] = 0  # a slice without any class
    labels[:, :, 1::2][labels[:, :, 1::2] == 2] = 1  # class 2 only in even slices
    labels[0, 0, :] = NODATA  # written as background
    return labels, 4  # class 3 absent everywhere


CASES = {  # geometry, multi-frame source, (columns, rows, slices)
    "plain": (Geometry(), False, (20, 16, 9)),
    "oblique": (oblique(), False, (20, 16, 9)),
    "tilted": (tilted(), False, (20, 16, 9)),
    "multiframe": (Geometry(), True, (20, 16, 9)),
    "odd": (tilted(), False, (7, 5, 6)),  # 35 bits a frame: frames share bytes
    "odd-multiframe": (oblique(), True, (7, 5, 6)),
    "one": (Geometry(), False, (8, 3, 5)),  # one segment: shared segment identification
    "empty": (Geometry(), False, (7, 5, 4)),  # highdicom then keeps every frame
    "many": (Geometry(), False, (7, 5, 4)),
}


def _elements(ds: pydicom.Dataset, prefix: str = "") -> dict:
    """Every data element, nested items included, by path; new UIDs, dates and times and
    the Pixel Data left out."""
    out: dict = {}
    for elem in ds:
        if elem.keyword in NEW_UIDS or elem.VR in ("DA", "TM", "DT") or \
                elem.keyword == "PixelData":
            continue
        key = prefix + (elem.keyword or str(elem.tag))
        if elem.VR == "SQ":
            out[key] = len(elem.value)
            for i, item in enumerate(elem.value):
                out.update(_elements(item, f"{key}[{i}]."))
        else:
            out[key] = elem.value
    return out


def _assert_same_seg(ours: Path, reference: Path) -> pydicom.Dataset:
    a, b = pydicom.dcmread(ours), pydicom.dcmread(reference)
    assert _elements(a.file_meta) == _elements(b.file_meta)
    elements = _elements(a)
    assert elements == _elements(b)
    assert len(elements) > 100  # the functional groups were compared
    assert a.SOPInstanceUID != b.SOPInstanceUID  # new UIDs each time
    assert len(a.PixelData) == len(b.PixelData) == \
        pixel_data_length(int(a.NumberOfFrames), a.Rows, a.Columns)
    odd = -(-int(a.NumberOfFrames) * a.Rows * a.Columns // 8) % 2
    assert a.PixelData[:len(a.PixelData) - odd] == b.PixelData[:len(b.PixelData) - odd]
    if odd:
        assert a.PixelData[-1:] == b"\x00" and b.PixelData[-1:] == b"0"
    return a


@pytest.mark.parametrize("case", list(CASES))
def test_the_streamed_seg_is_highdicoms_own(tmp_path, case):
    geometry, multiframe, shape = CASES[case]
    files = write_series(tmp_path / "ct", np.zeros(shape, np.int16), geometry,
                         Options(multiframe=multiframe))
    series = DICOM.open(files[0]).series
    labels, n = _labels(case, shape)
    classes = _classes(n)
    asked: list[tuple[int, int]] = []

    def slab(k0: int, k1: int) -> np.ndarray:
        asked.append((k0, k1))
        return labels[:, :, k0:k1]

    reference = write_dicom_seg_whole(tmp_path / "whole.dcm", series, slab, classes,
                                      model="demo", nodata=NODATA)
    for slices in (1, 4):  # one slice a slab; slabs that do not divide the series
        asked.clear()
        ours = write_dicom_seg(tmp_path / f"seg{slices}.dcm", series, slab, classes,
                               model="demo", nodata=NODATA,
                               max_voxels=shape[0] * shape[1] * slices)
        assert max(k1 - k0 for k0, k1 in asked) == min(slices, shape[2])
        assert len(asked) == 2 * -(-shape[2] // slices)  # two passes
        ds = _assert_same_seg(ours, reference)
        assert not list(tmp_path.glob(".*.tmp"))
    truth = np.where(labels == NODATA, 0, labels)
    if case == "empty":
        assert int(ds.NumberOfFrames) == shape[2] * (n - 1)
    else:
        kept = {(int(c), k) for k in range(shape[2]) for c in np.unique(truth[:, :, k]) if c}
        assert int(ds.NumberOfFrames) == len(kept)
    back = read_seg_slab(hd.seg.segread(ours), series, 0, shape[2])
    np.testing.assert_array_equal(back, truth)


def test_frames_written_in_any_order_carry_their_bits_across_bytes():
    rng = np.random.default_rng(5)
    columns, rows, n = 5, 3, 7  # 15 bits a frame
    labels = rng.integers(0, 3, (columns, rows, n)).astype(np.uint8)
    frames = LabelFrames(lambda a, b: labels[:, :, a:b], (columns, rows, n), top=2,
                         nodata=None, max_voxels=columns * rows * 2, where="x")
    present = frames.presence()
    plan = [(s, k) for k in range(n) for s in (1, 2) if present[k, s]]
    plan = [plan[i] for i in rng.permutation(len(plan))]  # any frame order
    fh = io.BytesIO(b"header")
    fh.seek(0, 2)
    length = append_pixel_data(fh, plan, frames, present)
    value = fh.getvalue()[len(b"header") + 12:]  # tag, VR, 2 reserved, length
    assert len(value) == length == pixel_data_length(len(plan), rows, columns)
    bits = np.concatenate([(labels[:, :, k].T == s).ravel() for s, k in plan])
    assert value == np.packbits(bits, bitorder="little").tobytes().ljust(length, b"\x00")
    assert fh.getvalue()[6:18] == b"\xe0\x7f\x10\x00OB\x00\x00" + length.to_bytes(4, "little")


def test_memory_holds_a_slab_not_the_series(tmp_path):
    shape = (448, 384, 32)  # 5.25 Mi voxels; slabs of 2 slices
    files = write_series(tmp_path / "ct", np.zeros(shape, np.int16), Geometry())
    series = DICOM.open(files[0]).series
    labels = np.zeros(shape, np.uint8)
    labels[20:120, 30:90] = 1
    labels[100:150, 100:140, ::3] = 2
    peaks = {}  # the whole writer first: it loads pydicom's code tables (~85 MB, once)
    for name, writer in (("whole", write_dicom_seg_whole), ("stream", write_dicom_seg)):
        tracemalloc.start()
        writer(tmp_path / f"{name}.dcm", series, lambda a, b: labels[:, :, a:b], _classes(3),
               model="demo", max_voxels=shape[0] * shape[1] * 2)
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks["whole"] > labels.nbytes, peaks  # highdicom holds the series
    assert peaks["stream"] < labels.nbytes / 3, peaks  # a slab (+ headers) only
