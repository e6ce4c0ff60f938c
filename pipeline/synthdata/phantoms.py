"""Synthetic phantom volumes as NIfTI files: demo archives and test data.

:func:`write_phantom` renders a seeded phantom (``segcore.synthetic.phantom``:
an organ as stuff, lesions as things, bias field and noise, all in mm) and
writes it with a chosen orientation, spacing and header flavour, plus its
label file (4th axis of 2: class id, lesion instance id), so every quirk of a
hospital archive can be produced on demand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.synthdata.volumes import write_canonical, write_broken
from segcore.synthetic.phantom import PhantomSpec, render_phantom


@dataclass(frozen=True)
class PhantomFile:
    """Where a phantom was written and what it holds (canonical ``(Z, Y, X)`` truth)."""

    image: Path
    labels: Path | None
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]


def write_phantom(image: Path, *, shape: tuple[int, int, int] = (64, 64, 64),
                  spacing: tuple[float, float, float] = (2.0, 2.0, 2.0), seed: int = 0,
                  axcodes: str = "RAS", labels: Path | None = None, version: int = 1,
                  big_endian: bool = False, qform_code: int = 1, sform_code: int = 1,
                  lesions: tuple[int, int] = (4, 8),
                  lesion_radius_mm: tuple[float, float] = (6.0, 12.0),
                  dtype: str = "int16") -> PhantomFile:
    """Render a phantom and write ``image`` (and ``labels``) as NIfTI.

    Parameters
    ----------
    image, labels : Path
        ``.nii`` or ``.nii.gz`` paths; ``labels`` gets class ids and instance ids
        on a 4th axis of length 2 (uint16), on the image's exact grid.
    shape, spacing : tuple
        Canonical ``(Z, Y, X)`` voxels and their size in mm.
    axcodes : str
        Orientation of the file's voxel axes (``"LPS"``, ``"PLS"``, ``"LAS"``, ...).
    lesions, lesion_radius_mm : tuple
        Lesion count and radius ranges; the defaults are ``demo-medical``'s training range.
    """
    phantom = render_phantom(PhantomSpec(shape=shape, spacing=spacing, seed=seed,
                                         lesions=lesions, lesion_radius_mm=lesion_radius_mm))
    data = phantom.image.astype(dtype)
    kw = {"axcodes": axcodes, "spacing": spacing, "version": version, "big_endian": big_endian,
          "qform_code": qform_code, "sform_code": sform_code}
    write_canonical(image, data, **kw)
    if labels is not None:
        truth = np.stack([phantom.semantic.astype(np.uint16),
                          phantom.instance.astype(np.uint16)], axis=-1)
        write_canonical(labels, truth, **{**kw, "big_endian": False})
    return PhantomFile(image, labels, tuple(shape), tuple(spacing))


BROKEN_KINDS = ("zero-byte", "header-only", "cifti", "truncated-gzip")


def write_archive(root: Path, *, volumes: int = 6, broken: tuple[str, ...] = (),
                  shape: tuple[int, int, int] = (48, 56, 52), seed: int = 0,
                  with_labels: bool = True) -> dict[str, Path]:
    """A hospital-like archive tree ``sub-XX/anat/scan.nii[.gz]`` (+ ``labels/`` mirror).

    Volumes cycle through orientations, spacings and formats; ``broken`` adds one
    file of each listed kind (:func:`pipeline.synthdata.volumes.write_broken`).
    Returns scene id -> labels path (for ``--labels``).
    """
    orientations = ("LPS", "RAS", "PLS", "LAS")
    spacings = ((2.0, 2.0, 2.0), (2.5, 2.0, 2.0), (2.0, 1.8, 1.8))
    label_map: dict[str, Path] = {}
    for i in range(volumes):
        sub = root / "archive" / f"sub-{i:02d}" / "anat"
        sub.mkdir(parents=True, exist_ok=True)
        suffix = ".nii.gz" if i % 2 == 0 else ".nii"
        lab_dir = root / "labels" / f"sub-{i:02d}" / "anat"
        lab_dir.mkdir(parents=True, exist_ok=True)
        labels = lab_dir / f"scan{suffix}" if with_labels else None
        write_phantom(sub / f"scan{suffix}", shape=shape, spacing=spacings[i % len(spacings)],
                      seed=seed + i, axcodes=orientations[i % len(orientations)], labels=labels,
                      version=2 if i % 5 == 4 else 1, big_endian=i % 3 == 2)
        if labels is not None:
            label_map[f"sub-{i:02d}__anat__scan"] = labels
    for j, kind in enumerate(broken):
        sub = root / "archive" / f"broken-{j:02d}" / "anat"
        sub.mkdir(parents=True, exist_ok=True)
        suffix = ".nii.gz" if kind == "truncated-gzip" else ".nii"
        write_broken(sub / f"scan{suffix}", kind)
    return label_map
