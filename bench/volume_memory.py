"""Peak memory of `segpipe run` on NIfTI volumes: bounded by the tile, not the volume.

    .venv/bin/python bench/volume_memory.py [--shapes 264x384x384 400x512x512]
                                            [--model demo-medical] [--tile 128] [--overlap 8]

For each canonical shape (Z x Y x X) it writes a seeded int16 phantom volume
(`.nii`, at the model's spacing, LPS orientation), runs `segpipe run` on it
in a subprocess and samples the resident set size of the whole process tree
(driver, Ray workers, Ray services) every 0.2 s. Prints wall time and peaks per
volume, then the ratio of the largest volume's peak to the smallest's. The
acceptance case is 512 x 512 x 400 int16 (the second default shape). The
smaller default volume is the smallest with a full-size interior tile window at
tile 128 (three tiles per axis), so both runs hold windows of the same size and
the ratio shows what the volume size itself costs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import measure  # noqa: E402  (bench/memory.py: the process-tree sampler)

ROOT = Path(__file__).resolve().parents[1]


def parse_shape(text: str) -> tuple[int, int, int]:
    z, y, x = (int(v) for v in text.lower().split("x"))
    return z, y, x


def make_volume(path: Path, shape: tuple[int, int, int], spacing: list[float]) -> None:
    if path.is_file():
        return
    code = ("from pathlib import Path; from pipeline.synthdata.phantoms import write_phantom; "
            f"write_phantom(Path('{path}'), shape={shape}, spacing={tuple(spacing)}, seed=3, "
            "axcodes='LPS')")
    subprocess.run([sys.executable, "-c", code], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["264x384x384", "400x512x512"])
    parser.add_argument("--model", default="demo-medical")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--overlap", type=int, default=None,
                        help="halo per side (default: the model's, 56 for demo-medical)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".bench")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from pipeline.bundle import load_bundle

    spacing = load_bundle(args.model).spec.spacing or [1.0, 1.0, 1.0]
    extra = ["--tile", str(args.tile)] if args.tile else []
    extra += ["--overlap", str(args.overlap)] if args.overlap is not None else []
    gib = 1024**3
    rows = []
    for text in args.shapes:
        shape = parse_shape(text)
        volume = args.workdir / f"volume-{text}.nii"
        make_volume(volume, shape, spacing)
        size_gib = volume.stat().st_size / gib
        with tempfile.TemporaryDirectory(dir=args.workdir) as out:
            r = measure(volume, Path(out), args.model, args.workers, extra=extra)
        rows.append((text, r))
        print(f"{text:>12} int16 ({size_gib:.2f} GiB on disk)  wall {r['seconds']:7.1f} s  "
              f"peak RSS tree {r['tree'] / gib:6.2f} GiB  driver {r['driver'] / gib:5.2f} GiB  "
              f"largest process {r['single'] / gib:5.2f} GiB ({r['single_name']})", flush=True)
        top = sorted(r["by_name"].items(), key=lambda kv: -kv[1])[:6]
        print("         per process kind (peak): "
              + ", ".join(f"{name} {value / gib:.2f}" for name, value in top), flush=True)
    if len(rows) > 1:
        small, large = rows[0], rows[-1]
        print(f"ratio peak RSS {large[0]} / {small[0]}: {large[1]['tree'] / small[1]['tree']:.3f}"
              f" (tree), {large[1]['single'] / small[1]['single']:.3f} (largest process)")


if __name__ == "__main__":
    main()
