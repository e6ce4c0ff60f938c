"""Peak memory of DICOM series ingest (bounded by one slab) and of the DICOM-SEG export.

    .venv/bin/python bench/dicom_memory.py [--slices 160 640] [--size 512]

For each slice count it writes a CT series of ``size x size`` int16 single-frame files
(with a random-noise phantom, so nothing compresses away), then measures in a fresh
subprocess per step:

* ``ingest``: ``DICOM.open`` + ``DICOM.ingest`` into ``scene.zarr`` (headers, then the
  pixel data decoded slab by slab: at most 32 Mi voxels, 128 slices of 512 x 512);
* ``seg``: ``write_dicom_seg`` of a 3-class label volume read slab by slab from a
  zarr array (highdicom builds the SEG from one array: this one grows with the series).

Each row gives the series' size, the subprocess's RSS after imports (``base``), its peak
(``ru_maxrss``) and the difference. Ingest's difference stays near one slab whatever the
series' length; the SEG's grows with it (1 byte a voxel, plus the bit-packed frames).
Under CPU contention times are noisy; memory is not.
"""

from __future__ import annotations

import argparse
import json
import resource
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


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def step(kind: str, folder: Path, work: Path) -> dict:
    """One measured step, in this (fresh) process."""
    import highdicom  # noqa: F401 - imported before the baseline: its import is not the step
    import numpy as np
    import zarr
    from pydicom.sr.codedict import codes

    from pipeline.bundle import load_bundle
    from pipeline.formats.dicom import DICOM
    from pipeline.io.dicom_seg import write_dicom_seg
    from pipeline.options import RunOptions

    bundle = load_bundle("demo-medical")
    _ = codes.cid7162.ArtificialIntelligence  # loads pydicom's code tables (fixed cost)
    first = min(folder.iterdir())
    base = _rss_mib()
    start = time.perf_counter()
    opened = DICOM.open(first)
    if kind == "ingest":
        DICOM.ingest(opened, work / "scene.zarr", bundle=bundle,
                     options=RunOptions(spacing="ignore"), attrs={}, copy=True)
    else:
        series = opened.series
        columns, rows, n = series.disk_shape
        labels = zarr.create_array(work / "labels.zarr", shape=(columns, rows, n),
                                   chunks=(columns, rows, 32), dtype="uint8")
        for k0 in range(0, n, 32):
            block = np.zeros((columns, rows, min(32, n - k0)), np.uint8)
            block[columns // 4: columns // 2, rows // 4: rows // 2] = 1
            block[columns // 2: columns // 2 + 20, rows // 2: rows // 2 + 20] = 2
            labels[:, :, k0: k0 + block.shape[2]] = block
        write_dicom_seg(work / "segmentation.dcm", series, lambda a, b: labels[:, :, a:b],
                        [c.model_dump() for c in bundle.spec.classes], model="demo-medical")
    return {"base": base, "peak": _rss_mib(), "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[160, 640])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", nargs="+", choices=["ingest", "seg"], default=["ingest", "seg"])
    parser.add_argument("--step", nargs=3, help=argparse.SUPPRESS)  # kind folder work
    args = parser.parse_args()
    if args.step:
        kind, folder, work = args.step
        print(json.dumps(step(kind, Path(folder), Path(work))))
        return
    print(f"{'slices':>6} {'series MiB':>10} {'step':>6} {'base MiB':>9} {'peak MiB':>9} "
          f"{'peak-base':>9} {'s':>6}")
    for slices in args.slices:
        with tempfile.TemporaryDirectory(prefix="dicom-mem-") as tmp:
            folder = Path(tmp) / "series"
            write(folder, args.size, slices)
            for kind in args.steps:
                work = Path(tmp) / kind
                work.mkdir()
                out = subprocess.run(
                    [sys.executable, __file__, "--step", kind, str(folder), str(work)],
                    check=True, capture_output=True, text=True, cwd=ROOT)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                data = args.size * args.size * slices * 2 / MiB
                print(f"{slices:>6} {data:>10.0f} {kind:>6} {r['base']:>9.0f} {r['peak']:>9.0f} "
                      f"{r['peak'] - r['base']:>9.0f} {r['seconds']:>6.1f}", flush=True)


if __name__ == "__main__":
    main()
