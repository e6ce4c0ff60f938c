"""The demo scene: a seeded synthetic satellite scene with its truth, made once."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.synthdata.satellite import write_scene
from segcore.synthetic.satellite import SatelliteSceneSpec


def ensure_demo_scene(directory: Path, *, size: int = 4096, seed: int = 2026) -> tuple[Path, Path]:
    """Write ``demo-scene.tif`` and ``demo-scene_labels.tif`` unless they already match."""
    directory.mkdir(parents=True, exist_ok=True)
    image, labels = directory / "demo-scene.tif", directory / "demo-scene_labels.tif"
    stamp = directory / ".demo-scene.json"
    wanted = {"size": size, "seed": seed}
    if image.is_file() and labels.is_file() and stamp.is_file():
        if json.loads(stamp.read_text()) == wanted:
            return image, labels
    spec = SatelliteSceneSpec(seed=seed, height=size, width=size, bands=3)
    write_scene(image, spec=spec, label_path=labels)
    stamp.write_text(json.dumps(wanted))
    return image, labels


def ensure_medical_archive(directory: Path, *, volumes: int = 4, seed: int = 2026,
                           shape: tuple[int, int, int] = (96, 96, 96)) -> tuple[Path, Path]:
    """Write a small phantom archive (``archive/``, ``labels/``) unless it already matches.

    Volumes come in LPS/RAS/PLS/LAS orientations, ``.nii`` and ``.nii.gz``, NIfTI-1
    and -2, some big-endian and some at another spacing than the model's.
    """
    from pipeline.synthdata.phantoms import write_archive

    stamp = directory / ".demo-medical.json"
    wanted = {"volumes": volumes, "seed": seed, "shape": list(shape)}
    archive, labels = directory / "archive", directory / "labels"
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted and archive.is_dir():
        return archive, labels
    directory.mkdir(parents=True, exist_ok=True)
    write_archive(directory, volumes=volumes, shape=shape, seed=seed)
    stamp.write_text(json.dumps(wanted))
    return archive, labels
