"""A fuzz campaign over the GeoTIFF and NIfTI inputs: seeds, mutations, oracle, worker pool.

Used by ``tests/pipeline/test_fuzz.py`` (a fixed sample on every test run) and by
``bench/fuzz.py`` (the full campaign).

* **Seeds**: tiny real files written by the project's own writers
  (:func:`pipeline.synthdata.satellite.write_scene`, then re-encoded tiled/striped with
  DEFLATE/LZW/ZSTD/none, uint8/uint16/float32, with and without nodata, little and
  big-endian, classic and BigTIFF; :func:`pipeline.synthdata.volumes.write_nifti` and
  :func:`pipeline.synthdata.phantoms.write_phantom` for ``.nii``/``.nii.gz``, NIfTI-1/-2,
  big-endian, scaled, 4-D).
* **Mutations** (seeded numpy RNG, :func:`mutate`): bit flips, boundary-value overwrites,
  truncation (including to 0 bytes), insertion and deletion of byte runs, and header-field
  mutations at known offsets (NIfTI header fields; TIFF IFD entry counts, tag types,
  counts and values of the image-structure tags and the GeoKeys). For ``.nii.gz`` a byte
  mutation hits the compressed bytes or, half of the time (and always for header fields),
  the decompressed file, which is then recompressed.
* **Oracle** (:func:`check_file`): what ``segpipe run`` does with an input before the
  model sees it: the format's ``open`` (validation), then the ingest's own block copy into
  a scene store (:func:`pipeline.formats.geotiff.copy_bands`,
  :func:`pipeline.formats.nifti.copy_channels`) reading every pixel, the spacing decision
  of a NIfTI volume and the ground areas of a GeoTIFF. Allowed: success, or a segpipe
  error whose message is one line naming the file.
* **Pool** (:func:`run_campaign`): worker processes with an address-space limit, a soft
  alarm and a hard per-file deadline; a worker that dies or hangs is a finding and is
  replaced.
"""

from __future__ import annotations

import gzip
import multiprocessing as mp
import os
import resource
import shutil
import signal
import struct
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

import numpy as np

GEOTIFF, NIFTI = "geotiff", "nifti"
KINDS = ("bitflip", "boundary", "truncate", "insert", "delete", "header")
OK, INPUT_ERROR, FINDING = "ok", "input-error", "finding"
SOFT_TIMEOUT_S = 10
HARD_TIMEOUT_S = 20
MEMORY_LIMIT = 2 * 2**30  # address space a worker may add after its imports


@dataclass(frozen=True)
class Seed:
    """One seed file: its path, format and a short description."""

    path: Path
    fmt: str
    name: str

    @property
    def gzipped(self) -> bool:
        return self.path.name.endswith(".gz")

    @property
    def suffix(self) -> str:
        return ".nii.gz" if self.gzipped else self.path.suffix


@dataclass(frozen=True)
class Result:
    """What the oracle said about one mutant."""

    index: int
    fmt: str
    seed: str
    kind: str
    outcome: str  # OK, INPUT_ERROR or FINDING
    detail: str  # the error line, or what went wrong
    stderr_lines: int = 0  # lines the check wrote to stderr (GDAL/nibabel warnings)


# --------------------------------------------------------------------------- seeds

_TIFF_VARIANTS = (  # name, dtype, creation options, nodata
    ("u8-tiled-deflate", "uint8", {"tiled": True, "blockxsize": 16, "blockysize": 16,
                                       "compress": "deflate"}, None),
    ("u8-striped-lzw-nodata0", "uint8", {"tiled": False, "blockysize": 8, "compress": "lzw"}, 0),
    ("u8-striped-raw", "uint8", {"tiled": False, "blockysize": 16, "compress": "none"}, None),
    ("u16-tiled-zstd-nodata0", "uint16", {"tiled": True, "blockxsize": 32, "blockysize": 16,
                                              "compress": "zstd"}, 0),
    ("u16-striped-deflate-bigendian", "uint16", {"tiled": False, "blockysize": 4,
                                                     "compress": "deflate", "endianness": "big"},
     None),
    ("f32-tiled-lzw-nodatanan", "float32", {"tiled": True, "blockxsize": 16, "blockysize": 16,
                                                "compress": "lzw", "predictor": 3}, float("nan")),
    ("f32-striped-zstd-bigtiff", "float32", {"tiled": False, "blockysize": 8, "compress": "zstd",
                                                 "bigtiff": "yes"}, -9999.0),
    ("u8-tiled-raw-separate", "uint8", {"tiled": True, "blockxsize": 16, "blockysize": 16,
                                            "compress": "none", "interleave": "band"}, None),
)


def write_seeds(folder: Path) -> list[Seed]:
    """Write every seed file into ``folder`` (a few hundred kB in all)."""
    folder.mkdir(parents=True, exist_ok=True)
    return _tiff_seeds(folder) + _nifti_seeds(folder)


def _tiff_seeds(folder: Path) -> list[Seed]:
    import rasterio
    from rasterio.shutil import copy as rio_copy

    from pipeline.synthdata.satellite import write_scene
    from segcore.synthetic.spec import SatelliteSceneSpec

    seeds = []
    for i, (name, dtype, options, nodata) in enumerate(_TIFF_VARIANTS):
        base = folder / f"base-{name}.tif"
        write_scene(base, spec=SatelliteSceneSpec(seed=i, height=48, width=64,
                                                  bands=4 if i % 2 else 3),
                    dtype=dtype, nodata=nodata, nodata_fraction=0.1 if nodata is not None
                    else 0.0, crs="EPSG:4326" if i == 3 else "EPSG:32633")
        out = folder / f"{name}.tif"
        with rasterio.Env(GDAL_NUM_THREADS=1):
            rio_copy(base, out, driver="GTiff", **options)
        base.unlink()
        seeds.append(Seed(out, GEOTIFF, name))
    return seeds


def _nifti_seeds(folder: Path) -> list[Seed]:
    from pipeline.synthdata.phantoms import write_phantom
    from pipeline.synthdata.volumes import orientation_affine, write_nifti

    rng = np.random.default_rng(0)
    shape = (24, 20, 16)
    data = rng.integers(0, 300, shape).astype(np.int16)
    lps = orientation_affine("LPS", (1.5, 1.0, 2.0), (10.0, -5.0, 3.0))
    ras = orientation_affine("RAS", (1.0, 1.0, 1.0))
    made = [
        ("n1-int16", ".nii", {"disk_data": data, "affine": lps}),
        ("n1-uint8-gz", ".nii.gz", {"disk_data": (data % 256).astype(np.uint8), "affine": ras}),
        ("n2-float32", ".nii", {"disk_data": data.astype(np.float32) / 7, "affine": lps,
                                    "version": 2}),
        ("n2-int16-bigendian-gz", ".nii.gz", {"disk_data": data, "affine": ras, "version": 2,
                                                  "big_endian": True}),
        ("n1-int16-bigendian-scaled", ".nii", {"disk_data": data, "affine": lps, "big_endian": True,
                                                   "scl_slope": 0.5, "scl_inter": -3.0}),
        ("n1-4d-uint16-gz", ".nii.gz", {"disk_data": np.stack([data, data[::-1]], -1)
                                            .astype(np.uint16), "affine": ras, "qform_code": 0}),
    ]
    seeds = []
    for name, suffix, kwargs in made:
        path = write_nifti(folder / f"{name}{suffix}", **kwargs)
        seeds.append(Seed(path, NIFTI, name))
    for name, suffix, version in (("phantom-n1", ".nii", 1), ("phantom-n2-gz", ".nii.gz", 2)):
        path = folder / f"{name}{suffix}"
        write_phantom(path, shape=(24, 24, 24), spacing=(2.0, 2.0, 2.0), version=version,
                      axcodes="LPS" if version == 1 else "RAS")
        seeds.append(Seed(path, NIFTI, name))
    return seeds


# --------------------------------------------------------------------------- mutations

_BOUNDARY_BYTES = (0x00, 0xFF, 0x7F, 0x80)
_BOUNDARY_INTS = (0, 1, -1, 2, 3, 7, 8, 16, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF,
                  0x7FFFFFFF, -0x80000000, 0xFFFFFFFF, 0x10000)
_BOUNDARY_FLOATS = (0.0, -0.0, 1.0, -1.0, float("nan"), float("inf"), float("-inf"), 1e38,
                    -1e38, 1e-45, 1e300, 65535.0)


def mutate(data: bytes, seed: Seed, rng: np.random.Generator, kind: str) -> bytes:
    """One mutant of ``data`` (the seed's bytes) by ``kind`` (one of :data:`KINDS`)."""
    if seed.gzipped and (kind == "header" or rng.random() < 0.5):
        inner = gzip.decompress(data)
        return gzip.compress(_mutate_bytes(inner, seed, rng, kind), compresslevel=1, mtime=0)
    return _mutate_bytes(data, seed, rng, kind)


def _mutate_bytes(data: bytes, seed: Seed, rng: np.random.Generator, kind: str) -> bytes:
    buf = bytearray(data)
    n = len(buf)
    if kind == "bitflip":
        for _ in range(int(rng.integers(1, 9))):
            pos = _position(rng, n)
            buf[pos] ^= 1 << int(rng.integers(0, 8))
    elif kind == "boundary":
        for _ in range(int(rng.integers(1, 4))):
            pos = _position(rng, n)
            if rng.random() < 0.5:
                buf[pos] = _BOUNDARY_BYTES[int(rng.integers(len(_BOUNDARY_BYTES)))]
            else:
                value = (-0x80000000, 0x7FFFFFFF)[int(rng.integers(2))]
                order = "<" if rng.random() < 0.5 else ">"
                _put(buf, pos, struct.pack(order + "i", value))
    elif kind == "truncate":
        cut = 0 if rng.random() < 0.05 else int(rng.integers(0, n))
        del buf[cut:]
    elif kind == "insert":
        pos = _position(rng, n)
        run = rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
        if rng.random() < 0.3:
            run = bytes([_BOUNDARY_BYTES[int(rng.integers(4))]]) * len(run)
        buf[pos:pos] = run
    elif kind == "delete":
        pos = _position(rng, n)
        del buf[pos:pos + int(rng.integers(1, 65))]
    elif kind == "header":
        (_tiff_field if seed.fmt == GEOTIFF else _nifti_field)(buf, rng)
    else:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    return bytes(buf)


def _position(rng: np.random.Generator, n: int) -> int:
    """A byte position, biased towards the header (the first 1 kB) half of the time."""
    if rng.random() < 0.5:
        return int(rng.integers(0, min(n, 1024)))
    return int(rng.integers(0, n))


def _put(buf: bytearray, pos: int, raw: bytes) -> None:
    raw = raw[: max(0, len(buf) - pos)]
    buf[pos:pos + len(raw)] = raw


def _int_value(rng: np.random.Generator, size: int, file_size: int) -> int:
    choices = list(_BOUNDARY_INTS) + [file_size, file_size - 1, file_size + 1,
                                      int(rng.integers(0, 2**16))]
    value = int(choices[int(rng.integers(len(choices)))])
    return value % (1 << (8 * size))


def _float_value(rng: np.random.Generator) -> float:
    if rng.random() < 0.2:
        return float(rng.normal(0, 1000))
    return _BOUNDARY_FLOATS[int(rng.integers(len(_BOUNDARY_FLOATS)))]


# NIfTI header fields a mutation targets (nibabel's header layout gives the offsets)
_NIFTI_FIELDS = ("sizeof_hdr", "dim", "datatype", "bitpix", "vox_offset", "pixdim", "scl_slope",
                 "scl_inter", "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
                 "qoffset_x", "srow_x", "srow_y", "srow_z", "intent_code", "magic", "xyzt_units",
                 "dim_info", "slice_start", "slice_end")


def _nifti_field(buf: bytearray, rng: np.random.Generator) -> None:
    from nibabel.nifti1 import Nifti1Header
    from nibabel.nifti2 import Nifti2Header

    if len(buf) < 4:
        return
    order = "<"
    size = struct.unpack("<i", bytes(buf[:4]))[0]
    if size not in (348, 540):
        order, size = ">", struct.unpack(">i", bytes(buf[:4]))[0]
    klass = Nifti2Header if size == 540 else Nifti1Header
    name = _NIFTI_FIELDS[int(rng.integers(len(_NIFTI_FIELDS)))]
    dtype, offset = klass.template_dtype.fields[name][:2]
    if name == "magic":
        magics = (b"n+1\0", b"ni1\0", b"n+2\0", b"\0\0\0\0", b"n+1\0\r\n\x1a\n",
                  rng.integers(0, 256, 4, dtype=np.uint8).tobytes())
        _put(buf, offset, magics[int(rng.integers(len(magics)))][: dtype.itemsize])
        return
    base = dtype.base if dtype.shape else dtype
    if dtype.shape:
        offset += int(rng.integers(dtype.shape[0])) * base.itemsize
    code = base.newbyteorder(order)
    if base.kind == "f":
        with np.errstate(over="ignore"):
            raw = np.array([_float_value(rng)], dtype=code).tobytes()
    else:
        value = _int_value(rng, base.itemsize, len(buf))
        raw = value.to_bytes(base.itemsize, "little" if order == "<" else "big")
    _put(buf, offset, raw)


# TIFF tags a header mutation targets
_TIFF_TAGS = (256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 322, 323, 324, 325, 339,
              33550, 33922, 34735, 34736, 42113)
_TIFF_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
                   16: 8, 17: 8, 18: 8}
_TIFF_INT = {1: "B", 3: "H", 4: "I", 16: "Q", 6: "b", 8: "h", 9: "i", 17: "q"}


def _tiff_field(buf: bytearray, rng: np.random.Generator) -> None:
    """Mutate the first IFD: its entry count, or one entry's type, count or value(s)."""
    head = bytes(buf[:16])
    if head[:2] not in (b"II", b"MM") or len(buf) < 16:
        return _mutate_offset(buf, rng, 4, 4, "<")
    order = "<" if head[:2] == b"II" else ">"
    big = struct.unpack(order + "H", head[2:4])[0] == 43
    ptr, word = (8, "Q") if big else (4, "I")
    if rng.random() < 0.08:  # the pointer to the first IFD
        return _mutate_offset(buf, rng, ptr, struct.calcsize(word), order)
    ifd = struct.unpack(order + word, head[ptr:ptr + struct.calcsize(word)])[0]
    count_size, entry_size = (8, 20) if big else (2, 12)
    if ifd + count_size > len(buf):
        return None
    n = struct.unpack(order + ("Q" if big else "H"), bytes(buf[ifd:ifd + count_size]))[0]
    entries = {}
    for i in range(min(n, 512)):
        at = ifd + count_size + i * entry_size
        if at + entry_size > len(buf):
            break
        tag = struct.unpack(order + "H", bytes(buf[at:at + 2]))[0]
        entries[tag] = at
    if rng.random() < 0.1 or not entries:
        return _mutate_offset(buf, rng, ifd, count_size, order)
    wanted = [t for t in _TIFF_TAGS if t in entries]
    tag = wanted[int(rng.integers(len(wanted)))] if wanted and rng.random() < 0.85 else \
        list(entries)[int(rng.integers(len(entries)))]
    at = entries[tag]
    what = rng.random()
    if what < 0.15:  # the type
        return _mutate_offset(buf, rng, at + 2, 2, order)
    if what < 0.35:  # the count
        return _mutate_offset(buf, rng, at + 4, 8 if big else 4, order)
    return _mutate_value(buf, rng, at, big, order)


def _mutate_value(buf: bytearray, rng: np.random.Generator, at: int, big: bool,
                  order: str) -> None:
    """Overwrite one of the entry's values (inline, or in its out-of-line array)."""
    typ, count = struct.unpack(order + ("HQ" if big else "HI"),
                               bytes(buf[at + 2:at + (12 if big else 8)]))
    size = _TIFF_TYPE_SIZE.get(typ, 1)
    inline_at, inline_size = at + (12 if big else 8), (8 if big else 4)
    if count * size <= inline_size:
        base = inline_at
    else:
        base = struct.unpack(order + ("Q" if big else "I"),
                             bytes(buf[inline_at:inline_at + inline_size]))[0]
        if rng.random() < 0.2:  # the offset itself
            return _mutate_offset(buf, rng, inline_at, inline_size, order)
    pos = base + int(rng.integers(0, max(1, min(count, 4096)))) * size
    if pos + size > len(buf):
        return None
    if typ in (11, 12):
        raw = struct.pack(order + ("f" if typ == 11 else "d"), _float_value(rng))
    elif typ in (5, 10):
        raw = struct.pack(order + "II", _int_value(rng, 4, len(buf)), _int_value(rng, 4, len(buf)))
    else:
        value = _int_value(rng, size, len(buf))
        raw = value.to_bytes(size, "little" if order == "<" else "big")
    _put(buf, pos, raw)
    return None


def _mutate_offset(buf: bytearray, rng: np.random.Generator, pos: int, size: int,
                   order: str) -> None:
    value = _int_value(rng, size, len(buf))
    _put(buf, pos, value.to_bytes(size, "little" if order == "<" else "big"))


# --------------------------------------------------------------------------- oracle


def check_file(path: Path, scratch: Path) -> None:
    """What ``segpipe run`` does with the input before the model: raises what it raises.

    Validation (the format's ``open``), then the ingest's block copy of every pixel into
    a scene store under ``scratch`` (removed again), the spacing decision of a volume
    (demo-medical's) and the ground areas of a raster.
    """
    from pipeline.formats import identify
    from pipeline.formats.geotiff import copy_bands, ground_areas
    from pipeline.formats.nifti import copy_channels, model_spacing

    fmt = identify(path)
    store = scratch / "scene.zarr"
    try:
        info = fmt.open(path)
        if fmt.name == GEOTIFF:
            copy_bands(info, store, bands=list(range(1, info.count + 1)), image_chunk=16,
                       attrs={**info.to_attrs(), "bands": list(range(1, info.count + 1))},
                       preview_step=4)
            ground_areas(info)((slice(0, info.height), slice(0, info.width)))
        else:
            model_spacing(info, _medical_bundle(), _options())
            channels = list(range(1, info.channels + 1))
            copy_channels(info, store, channels=channels, chunk=8,
                          attrs={**info.to_attrs(), "channels": channels})
    finally:
        shutil.rmtree(store, ignore_errors=True)


def _medical_bundle():
    global _BUNDLE
    if _BUNDLE is None:
        from pipeline.bundle import load_bundle

        _BUNDLE = load_bundle("demo-medical")
    return _BUNDLE


def _options():
    from pipeline.options import RunOptions

    return RunOptions()


_BUNDLE = None


def classify(path: Path, exc: BaseException | None) -> tuple[str, str]:
    """(outcome, detail) of one oracle call: ``exc`` is what it raised (None: success)."""
    from segcore.errors import SegpipeError

    if exc is None:
        return OK, ""
    text = str(exc)
    first = text.splitlines()[0] if text else ""
    if not isinstance(exc, SegpipeError):
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
        return FINDING, f"{type(exc).__name__}{at}: {first[:300]}"
    if "\n" in text or "\r" in text:
        return FINDING, f"multi-line {type(exc).__name__}: {text[:300]!r}"
    if str(path) not in text:
        return FINDING, f"{type(exc).__name__} does not name the file: {text[:300]}"
    return INPUT_ERROR, text.replace(str(path), "<file>")[:300]


def _one(path: Path, scratch: Path) -> tuple[str, str, int]:
    """Check one file with a soft alarm, its stderr captured: (outcome, detail, lines).

    A traceback written to stderr (e.g. a logging callback failing inside a C library's
    error handler) is a finding even when the call itself behaved.
    """
    def alarm(signum: int, frame: object) -> None:
        raise TimeoutError(f"no answer within {SOFT_TIMEOUT_S} s")

    signal.signal(signal.SIGALRM, alarm)
    capture = scratch / "stderr.txt"
    saved = os.dup(2)
    with open(capture, "w+b") as sink:
        os.dup2(sink.fileno(), 2)
        signal.alarm(SOFT_TIMEOUT_S)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                check_file(path, scratch)
            exc = None
        except BaseException as caught:  # noqa: BLE001 - everything is classified
            exc = caught
        finally:
            signal.alarm(0)
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        written = sink.read().decode("utf-8", "replace")
    outcome, detail = classify(path, exc)
    if "Traceback" in written and outcome != FINDING:
        last = [ln for ln in written.splitlines() if ln.strip()][-1]
        outcome, detail = FINDING, f"traceback on stderr: {last.strip()[:300]}"
    return outcome, detail, len(written.splitlines())


# --------------------------------------------------------------------------- pool


def _worker(conn: mp.connection.Connection, scratch: str) -> None:
    """Answer (outcome, detail) for each path received; limits its own address space."""
    import pipeline.formats
    import pipeline.formats.geotiff
    import pipeline.formats.nifti  # noqa: F401

    _medical_bundle()
    os.environ["GDAL_NUM_THREADS"] = "1"
    with open("/proc/self/statm") as fh:
        current = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (current + MEMORY_LIMIT, current + MEMORY_LIMIT))
    folder = Path(scratch)
    while True:
        try:
            path = conn.recv()
        except EOFError:
            return
        if path is None:
            return
        conn.send(_one(Path(path), folder))


class _Slot:
    """One worker process and the task it holds."""

    def __init__(self, ctx: mp.context.BaseContext, scratch: Path, number: int) -> None:
        self.folder = scratch / f"worker-{number}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, str(self.folder)), daemon=True)
        self.proc.start()
        child.close()
        self.task: tuple | None = None
        self.started = 0.0

    def give(self, task: tuple) -> None:
        self.task, self.started = task, time.monotonic()
        self.conn.send(str(task[1]))

    def stop(self, kill: bool = False) -> None:
        if kill and self.proc.is_alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        else:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self.proc.join(5)
        self.conn.close()


def run_campaign(seeds: list[Seed], count: int, *, seed: int = 0, jobs: int = 2,
                 workdir: Path | None = None, keep: Path | None = None,
                 progress: bool = False) -> list[Result]:
    """Mutate the seeds ``count`` times and check every mutant; one Result each.

    Mutants are written one by one into ``workdir`` and removed after their check;
    a finding's mutant is copied into ``keep`` (when given) as ``<index>-<kind><suffix>``.
    """
    rng = np.random.default_rng(seed)
    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="segpipe-fuzz-")) if own else workdir
    originals = {s.name: s.path.read_bytes() for s in seeds}
    ctx = mp.get_context("forkserver")
    slots = [_Slot(ctx, workdir, i) for i in range(max(1, jobs))]
    results: list[Result] = []
    pending = iter(range(count))
    try:
        _drive(slots, ctx, workdir, pending, seeds, originals, rng, results, keep, progress)
    finally:
        for slot in slots:
            slot.stop()
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    return sorted(results, key=lambda r: r.index)


def _drive(slots: list[_Slot], ctx: mp.context.BaseContext, workdir: Path, pending,
           seeds: list[Seed], originals: dict[str, bytes], rng: np.random.Generator,
           results: list[Result], keep: Path | None, progress: bool) -> None:
    def next_task() -> tuple | None:
        index = next(pending, None)
        if index is None:
            return None
        s = seeds[int(rng.integers(len(seeds)))]
        kind = KINDS[int(rng.integers(len(KINDS)))]
        path = workdir / f"mutant-{index}{s.suffix}"
        path.write_bytes(mutate(originals[s.name], s, rng, kind))
        return (index, path, s, kind)

    for slot in slots:
        if (task := next_task()) is not None:
            slot.give(task)
    while any(slot.task for slot in slots):
        busy = [slot for slot in slots if slot.task]
        ready = wait([slot.conn for slot in busy] + [slot.proc.sentinel for slot in busy],
                     timeout=1.0)
        for i, slot in enumerate(slots):
            if not slot.task:
                continue
            outcome = None
            if slot.conn in ready:
                try:
                    outcome = slot.conn.recv()
                except (EOFError, OSError):
                    outcome = None
            if outcome is None and (slot.proc.sentinel in ready or not slot.proc.is_alive()):
                slot.proc.join(1)
                outcome = (FINDING, f"worker died (exit code {slot.proc.exitcode})", 0)
            elif outcome is None and time.monotonic() - slot.started > HARD_TIMEOUT_S:
                outcome = (FINDING, f"hang: no answer within {HARD_TIMEOUT_S} s", 0)
                slot.stop(kill=True)
            if outcome is None:
                continue
            index, path, s, kind = slot.task
            results.append(Result(index, s.fmt, s.name, kind, *outcome))
            if outcome[0] == FINDING and keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, keep / f"{index}-{kind}-{s.name}{s.suffix}")
            path.unlink(missing_ok=True)
            slot.task = None
            if not slot.proc.is_alive():
                slot.stop()
                slots[i] = slot = _Slot(ctx, workdir, i)
            if progress and len(results) % 500 == 0:
                print(f"  {len(results)} files checked", flush=True)
            if (task := next_task()) is not None:
                slot.give(task)


def tally(results: list[Result]) -> Counter:
    """Counts by (format, kind, outcome)."""
    return Counter((r.fmt, r.kind, r.outcome) for r in results)
