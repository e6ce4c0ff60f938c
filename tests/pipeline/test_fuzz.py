"""Fuzzing the inputs: mutated GeoTIFF and NIfTI files give success or one line, never worse.

A fixed, seeded sample of the campaign in :mod:`tests.pipeline.fuzzing` (the full one is
``bench/fuzz.py``): every mutant goes through validation and the ingest's read of every
pixel in a worker process with a memory limit and a deadline. Allowed outcomes: success,
or a segpipe error whose message is one line naming the file; a crash, hang, other
exception, multi-line message or traceback on stderr fails the test. The regression cases
below are the minimized mutants of earlier findings (one header field or text byte each).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from tests.pipeline.fuzzing import (
    FINDING,
    INPUT_ERROR,
    KINDS,
    OK,
    _one,
    run_campaign,
    tally,
    write_seeds,
)

SAMPLE = 400


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return write_seeds(tmp_path_factory.mktemp("fuzz-seeds"))


def test_every_seed_is_a_good_input(seeds, tmp_path: Path) -> None:
    """The oracle accepts every seed: outcomes of mutants are the mutation's doing."""
    assert len({s.fmt for s in seeds}) == 2
    for seed in seeds:
        assert _one(seed.path, tmp_path)[:2] == (OK, ""), seed.name


def test_seeded_sample_has_no_findings(seeds, tmp_path: Path) -> None:
    results = run_campaign(seeds, SAMPLE, seed=13, jobs=2, workdir=tmp_path)
    assert len(results) == SAMPLE and [r.index for r in results] == list(range(SAMPLE))
    findings = [r for r in results if r.outcome == FINDING]
    assert not findings, "\n".join(f"{r.seed} {r.kind}: {r.detail}" for r in findings)
    counts = tally(results)
    for fmt in ("geotiff", "nifti"):  # every format and kind was tried, both outcomes seen
        assert all(sum(v for (f, k, _), v in counts.items() if (f, k) == (fmt, kind))
                   for kind in KINDS), counts
        assert {o for (f, _, o) in counts if f == fmt} == {OK, INPUT_ERROR}, counts


def _seed(seeds, name: str):
    return next(s for s in seeds if s.name == name)


def _tiff_text_tag(data: bytearray, tag: int) -> tuple[int, int]:
    """(offset, count) of an out-of-line text tag in the first IFD of a classic TIFF."""
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", data[4:8])[0]
    (n,) = struct.unpack(order + "H", data[ifd:ifd + 2])
    for i in range(n):
        at = ifd + 2 + 12 * i
        got, _, count, offset = struct.unpack(order + "HHII", data[at:at + 12])
        if got == tag:
            return offset, count
    raise AssertionError(f"tag {tag} not found")


def _nifti_field(data: bytes, name: str, value: float) -> bytes:
    from nibabel.nifti1 import Nifti1Header

    raw = bytearray(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    dtype, offset = Nifti1Header.template_dtype.fields[name][:2]
    order = "<" if struct.unpack("<i", raw[:4])[0] == 348 else ">"
    raw[offset:offset + dtype.itemsize] = np.array([value], dtype.newbyteorder(order)).tobytes()
    return gzip.compress(bytes(raw), mtime=0) if data[:2] == b"\x1f\x8b" else bytes(raw)


@pytest.mark.parametrize("seed_name, tag, reason", [
    ("u8-tiled-deflate", 42112, "GDAL_METADATA"),  # GDAL quoted it: traceback in rasterio
    ("u16-striped-deflate-bigendian", 42112, "GDAL_METADATA"),
    ("u8-striped-raw", 34737, "GeoAsciiParams"),
])
def test_tiff_text_tag_that_is_not_utf8_is_one_line(seeds, tmp_path: Path, seed_name: str,
                                                    tag: int, reason: str) -> None:
    seed = _seed(seeds, seed_name)
    data = bytearray(seed.path.read_bytes())
    offset, count = _tiff_text_tag(data, tag)
    data[offset + count // 2] = 0xFF
    path = tmp_path / f"bad-{tag}.tif"
    path.write_bytes(bytes(data))
    outcome, detail, _ = _one(path, tmp_path)
    assert outcome == INPUT_ERROR and reason in detail and "not text" in detail, detail


@pytest.mark.parametrize("seed_name, field, value, reason", [
    ("n1-int16", "xyzt_units", 7, "xyzt_units 7"),  # was KeyError inside nibabel
    ("n1-uint8-gz", "vox_offset", float("nan"), "vox_offset is nan"),  # was ValueError
    ("n1-int16-bigendian-scaled", "vox_offset", float("inf"), "vox_offset is inf"),
    ("phantom-n1", "vox_offset", float("-inf"), "infinity"),  # was OverflowError in nibabel
])
def test_nifti_header_field_gives_one_line(seeds, tmp_path: Path, seed_name: str, field: str,
                                           value: float, reason: str) -> None:
    seed = _seed(seeds, seed_name)
    path = tmp_path / f"bad-{field}{seed.suffix}"
    path.write_bytes(_nifti_field(seed.path.read_bytes(), field, value))
    outcome, detail, _ = _one(path, tmp_path)
    assert outcome == INPUT_ERROR and reason in detail, detail
