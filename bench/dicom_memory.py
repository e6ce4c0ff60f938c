"""Peak memory of DICOM series ingest and of the DICOM-SEG export (both bounded by one slab).

    .venv/bin/python bench/dicom_memory.py [--slices 160 320 640] [--size 512]
        [--steps ingest seg seg-whole]

For each slice count it writes a CT series of ``size x size`` int16 single-frame files
(with a random-noise phantom, so nothing compresses away) and a 3-class uint8 label
volume (``labels.zarr``, stored slice-major in chunks of 32 slices and read as
``(columns, rows, slices)`` views, like the scene store of an axial series), then
measures in a fresh subprocess per step:

* ``ingest``: ``DICOM.open`` + ``DICOM.ingest`` into ``scene.zarr`` (headers, then the
  pixel data decoded slab by slab: at most 32 Mi voxels, 128 slices of 512 x 512);
* ``seg``: ``write_dicom_seg`` of the labels read slab by slab from the zarr array (two
  passes over the slabs; highdicom builds the metadata from a stand-in of one pixel a
  frame; the frames are streamed into the file);
* ``seg-whole``: ``write_dicom_seg_whole``, the same SEG built by highdicom from the whole
  label array (the writer before streaming: it grows with the series).

Each row gives the series' size, the subprocess's RSS after imports and fixed tables
(pydicom's codes, highdicom's modules of the standard): ``base``, to which the peak is
reset (``/proc/self/clear_refs``, Linux); the step's peak (``VmHWM``), the difference and
the step's seconds. Ingest and ``seg`` stay near one slab plus the series' headers and
per-frame metadata whatever the series' length; ``seg-whole`` grows with it (about 1.7
bytes a voxel). Under CPU contention times are noisy; memory is not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20


def write(folder: Path, size: int, slices: int) -> None:
    """A ``size x size x slices`` int16 CT series, one file a slice."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, rng = generate_uid(), np.random.default_rng(0)
    for k in range(slices):
        ds = Dataset()
        ds.PatientName, ds.PatientID, ds.PatientSex = "Bench^Series", "BENCH", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.7", series
        ds.SeriesNumber, ds.Modality = 1, "CT"
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.8"
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 1
        ds.ImagePositionPatient = [-size / 2, -size / 2, 1.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 1.0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = rng.integers(0, 2000, (size, size), dtype=np.int16).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(folder / f"IM{k:05d}", enforce_file_format=True)


def _status_mib(key: str) -> float:
    """``VmRSS`` or ``VmHWM`` (peak) of this process, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _baseline_mib() -> float:
    """Reset the peak to the current RSS (``/proc/self/clear_refs``), so that peaks of the
    imports and table loads before it are not counted as the step's; the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def labels(path: Path, size: int, slices: int) -> None:
    """A 3-class uint8 label volume in zarr, stored ``(slices, rows, columns)`` in chunks of
    32 slices as ``scene.zarr`` holds an axial series (two classes in every slice)."""
    import numpy as np
    import zarr

    array = zarr.create_array(path, shape=(slices, size, size), chunks=(32, size, size),
                              dtype="uint8")
    for k0 in range(0, slices, 32):
        block = np.zeros((min(32, slices - k0), size, size), np.uint8)
        block[:, size // 4: size // 2, size // 4: size // 2] = 1
        block[:, size // 2: size // 2 + 20, size // 2: size // 2 + 20] = 2
        array[k0: k0 + block.shape[0]] = block


def step(kind: str, folder: Path, work: Path) -> dict:
    """One measured step, in this (fresh) process."""
    import highdicom  # noqa: F401 - imported before the baseline: its import is not the step
    import zarr
    from pydicom.sr.codedict import codes

    from pipeline.bundle import load_bundle
    from pipeline.formats.dicom import DICOM
    from pipeline.io.dicom_seg import write_dicom_seg, write_dicom_seg_whole
    from pipeline.options import RunOptions

    bundle = load_bundle("demo-medical")
    _ = codes.cid7162.ArtificialIntelligence  # loads pydicom's code tables (fixed cost)
    if kind != "ingest":  # highdicom's tables of the standard (~70 MB, once a process)
        from highdicom._standard_utils import (
            get_iod_module_map,
            get_module_attribute_map,
            get_sop_class_iod_map,
        )

        for load in (get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map):
            load()
    first = min(folder.iterdir())
    base = _baseline_mib()
    start = time.perf_counter()
    opened = DICOM.open(first)
    if kind == "ingest":
        DICOM.ingest(opened, work / "scene.zarr", bundle=bundle,
                     options=RunOptions(spacing="ignore"), attrs={}, copy=True)
    else:
        array = zarr.open_array(work.parent / "labels.zarr", mode="r")
        writer = write_dicom_seg if kind == "seg" else write_dicom_seg_whole
        writer(work / "segmentation.dcm", opened.series, lambda a, b: array[a:b].T,
               [c.model_dump() for c in bundle.spec.classes], model="demo-medical")
    return {"base": base, "peak": _status_mib("VmHWM"), "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[160, 320, 640])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", nargs="+", choices=["ingest", "seg", "seg-whole"],
                        default=["ingest", "seg", "seg-whole"])
    parser.add_argument("--step", nargs=3, help=argparse.SUPPRESS)  # kind folder work
    args = parser.parse_args()
    if args.step:
        kind, folder, work = args.step
        print(json.dumps(step(kind, Path(folder), Path(work))))
        return
    print(f"{'slices':>6} {'series MiB':>10} {'step':>9} {'base MiB':>9} {'peak MiB':>9} "
          f"{'peak-base':>9} {'s':>6}")
    for slices in args.slices:
        with tempfile.TemporaryDirectory(prefix="dicom-mem-") as tmp:
            folder = Path(tmp) / "series"
            write(folder, args.size, slices)
            if {"seg", "seg-whole"} & set(args.steps):
                labels(Path(tmp) / "labels.zarr", args.size, slices)
            for kind in args.steps:
                work = Path(tmp) / kind
                work.mkdir()
                out = subprocess.run(
                    [sys.executable, __file__, "--step", kind, str(folder), str(work)],
                    check=True, capture_output=True, text=True, cwd=ROOT)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                data = args.size * args.size * slices * 2 / MiB
                print(f"{slices:>6} {data:>10.0f} {kind:>9} {r['base']:>9.0f} {r['peak']:>9.0f} "
                      f"{r['peak'] - r['base']:>9.0f} {r['seconds']:>6.1f}", flush=True)


if __name__ == "__main__":
    main()
