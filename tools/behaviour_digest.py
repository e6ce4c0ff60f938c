"""Digest of everything the demos produce, to prove a refactoring changed no behaviour.

    .venv/bin/python tools/behaviour_digest.py digest --repo . --work /tmp/digest --out after.json
    .venv/bin/python tools/behaviour_digest.py compare before.json after.json

``digest`` runs ``segpipe demo`` (the 4096 x 4096 satellite scene, demo-satellite) and
``segpipe demo --medical`` (four phantom volumes, demo-medical) with the code of ``--repo``
(its directory goes first on ``PYTHONPATH``, so an older checkout made with ``git worktree``
runs with this virtual environment), then records per scene:

* the SHA-256 of every array in ``scene.zarr`` (dtype, shape and decoded content) and of
  the group's attributes;
* the SHA-256 of every exported file (COGs, ``.nii.gz``, quicklook PNGs, ``segments.json``);
* ``report.json`` without ``timings_s`` (the only key that may differ between two runs);

and ``batch.json`` without the per-scene ``seconds``. The generated inputs under
``WORK/*/inputs`` are kept between runs (same files, same modification times, so the run
fingerprints agree); every result is deleted before a run. ``compare`` prints every
difference and exits 1 when there is one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

DEMOS = {"satellite": [], "medical": ["--medical"]}
SKIP_FILES = {"report.html", "report.json", "batch.json", "batch.csv"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _array_digest(array) -> str:
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    data = np.ascontiguousarray(array[...])
    digest.update(data.tobytes())
    return digest.hexdigest()


def _zarr_digests(store: Path) -> dict[str, str]:
    import zarr

    out: dict[str, str] = {}

    def walk(group, prefix: str) -> None:
        out[f"{prefix}.attrs"] = _sha(json.dumps(dict(group.attrs), sort_keys=True).encode())
        for name, array in sorted(group.arrays()):
            out[f"{prefix}{name}"] = _array_digest(array)
        for name, sub in sorted(group.groups()):
            walk(sub, f"{prefix}{name}/")

    walk(zarr.open_group(str(store), mode="r"), "")
    return out


def _normalise(value, work: Path):
    """Replace the work directory in strings (inputs are named by absolute path)."""
    if isinstance(value, dict):
        return {k: _normalise(v, work) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v, work) for v in value]
    if isinstance(value, str):
        return value.replace(str(work), "<work>")
    return value


def _scene_digest(scene: Path, work: Path) -> dict:
    report = json.loads((scene / "report.json").read_text())
    report.pop("timings_s", None)
    files = {p.name: _sha(p.read_bytes()) for p in sorted(scene.iterdir())
             if p.is_file() and p.name not in SKIP_FILES}
    return {"report": _normalise(report, work), "files": files,
            "zarr": _zarr_digests(scene / "scene.zarr")}


def run_demo(repo: Path, work: Path, flags: list[str]) -> None:
    """Run one demo with ``repo``'s code; results are removed first, inputs kept."""
    work.mkdir(parents=True, exist_ok=True)
    for child in work.iterdir():
        if child.name != "inputs":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    env = {**os.environ, "PYTHONPATH": str(repo.resolve()), "RAY_USAGE_STATS_ENABLED": "0",
           "DO_NOT_TRACK": "1"}
    cmd = [sys.executable, "-c", "from flows.cli import main; main()", "demo", "--out",
           str(work), *flags]
    subprocess.run(cmd, cwd=work, env=env, check=True)


def digest(repo: Path, work: Path) -> dict:
    doc: dict = {}
    for name, flags in DEMOS.items():
        out = work / name
        run_demo(repo, out, flags)
        batch = json.loads((out / "batch.json").read_text())
        for row in batch["scenes"]:
            row.pop("seconds", None)
        doc[name] = {"batch": _normalise(batch, work),
                     "scenes": {p.name: _scene_digest(p, work) for p in sorted(out.iterdir())
                                if (p / "report.json").is_file()}}
    return doc


def _diff(a, b, where: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out.append(f"{where}/{key}: only in {'after' if key not in a else 'before'}")
            else:
                _diff(a[key], b[key], f"{where}/{key}", out)
    elif a != b:
        out.append(f"{where}: {str(a)[:120]} != {str(b)[:120]}")


def compare(before: Path, after: Path) -> int:
    differences: list[str] = []
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    _diff(a, b, "", differences)
    scenes = sum(len(v["scenes"]) for v in a.values())
    arrays = sum(len(s["zarr"]) for v in a.values() for s in v["scenes"].values())
    files = sum(len(s["files"]) for v in a.values() for s in v["scenes"].values())
    for line in differences:
        print(line)
    print(f"{scenes} scenes, {arrays} zarr arrays/attrs, {files} files compared: "
          f"{len(differences)} differences")
    return 1 if differences else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("digest")
    d.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    d.add_argument("--work", type=Path, required=True)
    d.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.cmd == "compare":
        return compare(args.before, args.after)
    work = args.work.resolve()
    args.out.write_text(json.dumps(digest(args.repo, work), indent=1, sort_keys=True))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
