"""The effective halo of a bundle: probed, then checked against whole-scene inference.

:func:`probed_halo` measures the halo beyond which the model's output barely
depends on more context (:func:`segcore.receptive_field_effective.effective_halo`).
:func:`checked_halo` then checks it on a synthetic scene the model understands: a
phantom volume for 3-D models, a synthetic satellite scene for 2-D ones
(:data:`CHECK_SIDE` pixels a side). The scene is tiled with that halo, split along
the axes the real plan splits into cores of at most half its side (so it has at
least as many seam pixels per pixel as the real scene), and its labels are compared
with those of one whole-scene pass. While fewer than :data:`TARGET_AGREEMENT` of
the pixels agree, the halo grows by the model stride, up to the analytic halo
(exact by construction). Both are kept per bundle (and halo and check tile), in the
process and in the calibration cache (:mod:`pipeline.run.calibration_cache`), so a
model is measured once, not once per scene or per command.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pipeline.bundle import ModelBundle, load_bundle
from pipeline.inference.predictor import TilePredictor
from pipeline.run.calibration_cache import remembered
from segcore.geometry.grid import TileGrid
from segcore.receptive_field_effective import effective_halo

TARGET_AGREEMENT = 0.9999  # labels equal to whole-scene inference on at least this share
TOLERANCE = 0.01  # relative output change accepted by the probe
CHECK_SIDE = {2: 256, 3: 64}  # side of the synthetic check scene per number of axes
_LOCK = threading.Lock()  # scenes in flight plan in threads: measure once, not once each


@dataclass(frozen=True)
class HaloChoice:
    """An effective halo and how it was found.

    Parameters
    ----------
    halo : int
        Halo in pixels (a multiple of the stride, at most the analytic halo).
    agreement : float
        Share of the check scene's pixels whose class equals whole-scene inference.
    probed : int
        The probe's halo before the check (``halo >= probed``).
    check_tile : tuple of int
        Tile core the check scene was split with.
    seconds : float
        Time the check took when it was measured (possibly by an earlier command).
    """

    halo: int
    agreement: float
    probed: int
    check_tile: tuple[int, ...]
    seconds: float


def _raw_scene(bundle: ModelBundle, side: int) -> np.ndarray:
    """``(C, *S)`` raw synthetic scene for the bundle (channels repeated as needed)."""
    spec = bundle.spec
    if spec.ndim == 3:
        from segcore.synthetic.phantom import PhantomSpec, render_phantom

        spacing = tuple(spec.spacing or (1.0, 1.0, 1.0))
        radii = tuple(0.35 * side * s for s in spacing)
        raw = render_phantom(PhantomSpec(shape=(side,) * 3, spacing=spacing, seed=7,
                                         lesions=(4, 8), lesion_radius_mm=(6.0, 12.0),
                                         organ_radii_mm=radii)).image[None]
    else:
        from segcore.synthetic.satellite import SatelliteSceneSpec, render

        raw = render(SatelliteSceneSpec(seed=7, height=side, width=side)).image
    channels, scales = spec.input.channels, spec.input.value_scale
    raw = np.resize(raw, (channels, *raw.shape[1:])) if raw.shape[0] != channels else raw
    if str(raw.dtype) not in scales:  # a sample type the bundle knows how to scale
        raw = raw.astype("float32" if "float32" in scales else next(iter(scales)))
    return raw


def _labels(predictor: TilePredictor, x: np.ndarray) -> np.ndarray:
    return predictor.outputs([x])[0]["semantic"].argmax(axis=0)


def tiled_agreement(predictor: TilePredictor, x: np.ndarray, *, tile: tuple[int, ...],
                    halo: int, whole: np.ndarray | None = None) -> float:
    """Share of pixels of ``x`` ``(C, *S)`` whose class is the same tiled (``tile``,
    ``halo``) as in one whole-scene pass (``whole``: those labels, if known)."""
    whole = _labels(predictor, x) if whole is None else whole
    grid = TileGrid.create(x.shape[1:], tile, halo, align=predictor.stride)
    same = 0
    for t in grid:
        labels = _labels(predictor, x[(slice(None), *t.halo.slices)])
        same += int((labels[t.core_in_halo.slices] == whole[t.core.slices]).sum())
    return same / whole.size


def check_tile_for(core: tuple[int, ...], shape: tuple[int, ...], stride: int) -> tuple[int, ...]:
    """Tile of the check scene: split where the plan splits the scene (at most half the
    check scene's side), whole where the plan does not.

    Examples
    --------
    >>> check_tile_for((80, 160, 160), (160, 160, 160), 8)
    (32, 64, 64)
    >>> check_tile_for((24, 64, 512), (512, 512, 512), 8)
    (24, 32, 64)
    """
    side = CHECK_SIDE[len(core)]
    half = max(stride, side // 2 // stride * stride)
    return tuple(min(max(stride, c // stride * stride), half) if c < n else side
                 for c, n in zip(core, shape))


def _measure_probe(bundle: ModelBundle, analytic: int) -> dict:
    start = time.perf_counter()
    spec = bundle.spec
    found = effective_halo(TilePredictor(bundle).net, spec.input.channels, spec.ndim,
                           stride=spec.stride, max_halo=analytic, tolerance=TOLERANCE)
    return {"halo": found.halo, "seconds": time.perf_counter() - start}


@lru_cache(maxsize=16)
def _probe(path: str, mtime_ns: int, analytic: int) -> tuple[int, float]:
    bundle = load_bundle(path)
    kept = remembered("halo-probe", bundle, {"analytic": int(analytic), "tolerance": TOLERANCE},
                      lambda: _measure_probe(bundle, analytic))
    return int(kept["halo"]), float(kept["seconds"])


def probed_halo(bundle: ModelBundle, analytic: int) -> int:
    """The probe's effective halo (at most ``analytic``), measured once per bundle."""
    with _LOCK:
        return _probe(str(bundle.path), bundle.weights_path.stat().st_mtime_ns, analytic)[0]


def _measure_check(bundle: ModelBundle, analytic: int, probed: int,
                   check_tile: tuple[int, ...]) -> dict:
    start = time.perf_counter()
    predictor = TilePredictor(bundle)
    raw = _raw_scene(bundle, CHECK_SIDE[bundle.spec.ndim])
    x = predictor.normalise(raw, np.ones(raw.shape[1:], dtype=bool))
    whole = _labels(predictor, x)
    halo = probed
    while True:
        agreement = tiled_agreement(predictor, x, tile=check_tile, halo=halo, whole=whole)
        if agreement >= TARGET_AGREEMENT or halo >= analytic:
            break
        halo = min(analytic, halo + bundle.spec.stride)
    return {"halo": halo, "agreement": agreement, "seconds": time.perf_counter() - start}


@lru_cache(maxsize=16)
def _check(path: str, mtime_ns: int, analytic: int, probed: int,
           check_tile: tuple[int, ...]) -> HaloChoice:
    bundle = load_bundle(path)
    args = {"analytic": int(analytic), "probed": int(probed),
            "check_tile": [int(c) for c in check_tile],
            "target": TARGET_AGREEMENT, "side": CHECK_SIDE[bundle.spec.ndim]}
    kept = remembered("halo-check", bundle, args,
                      lambda: _measure_check(bundle, analytic, probed, check_tile))
    return HaloChoice(halo=int(kept["halo"]), agreement=float(kept["agreement"]),
                      probed=probed, check_tile=check_tile, seconds=float(kept["seconds"]))


def checked_halo(bundle: ModelBundle, analytic: int, probed: int,
                 check_tile: tuple[int, ...]) -> HaloChoice:
    """The probed halo checked on the synthetic scene tiled with ``check_tile``, grown by
    the stride until labels agree (module docstring); once per bundle, halo and tile."""
    with _LOCK:
        return _check(str(bundle.path), bundle.weights_path.stat().st_mtime_ns, analytic,
                      probed, tuple(check_tile))

