"""The tile plan of a scene: tile cores, halo and the grid, from options and bundle.

Halo (per side, a multiple of the model stride), the first that applies:

1. ``--overlap`` (``given``);
2. ``--halo-mode exact|effective`` when set;
3. the bundle's ``overlap`` (``given``);
4. the default mode: ``effective`` for 3-D models, ``exact`` for 2-D ones.

``exact`` is half the analytic receptive field (tiled output equals whole-scene
output); ``effective`` is measured and checked once per bundle
(:mod:`pipeline.run.halo_check`); a model without a finite receptive field gets
``tile / 4`` (``quarter-tile``).

Tile core: ``--tile`` (cubic), else for 3-D models the cheapest cores whose window
fits the worker's memory budget (:mod:`pipeline.run.window_cost`,
:mod:`pipeline.run.window_memory`; one window for a volume that fits and would not
finish sooner split), else the bundle's ``tile``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

from pipeline.bundle import ModelBundle, ModelFormat, ModelSpec, load_bundle
from pipeline.options import HaloMode, RunOptions
from segcore.errors import ModelError
from segcore.geometry.grid import TileGrid
from segcore.receptive_field import halo_for

log = logging.getLogger(__name__)

GIVEN, QUARTER_TILE = "given", "quarter-tile"  # halo modes the report names besides HaloMode


@dataclass(frozen=True)
class TilePlan:
    """The grid a scene is tiled with.

    Parameters
    ----------
    grid : TileGrid
        Cores (``grid.tile`` per axis) and halos.
    halo : int
        Halo per side in pixels.
    tile : int
        Largest core side (the core itself when cubic).
    halo_mode : str
        ``exact``, ``effective``, ``given`` or ``quarter-tile`` (module docstring).
    halo_agreement : float or None
        ``effective``: share of a check scene's pixels whose class equals whole-scene
        inference with this halo (1.0 when the plan is one tile); else None.
    """

    grid: TileGrid
    halo: int
    tile: int
    halo_mode: str = HaloMode.EXACT.value
    halo_agreement: float | None = None

    @property
    def core(self) -> tuple[int, ...]:
        """Core size per axis (the label arrays' chunks)."""
        return self.grid.tile

    def report_fields(self) -> dict:
        """The plan's keys of ``report.json``'s ``tiles`` besides counts, tile and halo."""
        return {"core": list(self.core), "halo_mode": self.halo_mode,
                "halo_agreement": self.halo_agreement}


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@lru_cache(maxsize=16)
def _measured_receptive_field(path: str, mtime_ns: int) -> int:
    bundle = load_bundle(path)
    if bundle.spec.format is ModelFormat.STATE_DICT:  # segcore's models declare theirs
        return int(getattr(bundle.build(), "receptive_field", 0) or 0)
    from pipeline.run.calibration_cache import remembered

    def probe() -> dict:  # TorchScript / torch.export: structure unknown, probe it
        from segcore.receptive_field import measure

        net = bundle.build()  # torch loads here, not for a result already in the cache
        declared = int(getattr(net, "receptive_field", 0) or 0)
        return {"receptive_field": declared or
                int(measure(net, bundle.spec.input.channels, ndim=bundle.spec.ndim) or 0)}

    try:
        return int(remembered("receptive-field", bundle, {}, probe)["receptive_field"])
    except ModelError:  # the model cannot be loaded: one clear line, as ever
        raise
    except Exception:  # noqa: BLE001 - a model that cannot be probed gets the default halo
        return 0


def receptive_field_of(bundle: ModelBundle) -> int:
    """The bundle's receptive field: declared in ``model.yaml``, else the architecture's
    analytic value, else measured by a gradient probe (0 = unknown or global)."""
    if bundle.spec.receptive_field is not None:
        return bundle.spec.receptive_field
    weights = bundle.weights_path
    return _measured_receptive_field(str(bundle.path), weights.stat().st_mtime_ns)


def halo_mode_of(bundle: ModelBundle, options: RunOptions) -> str:
    """Which rule sets the halo (module docstring), before a receptive field is known.

    Examples
    --------
    >>> from pipeline.bundle import load_bundle
    >>> halo_mode_of(load_bundle("demo-medical"), RunOptions())
    'effective'
    >>> halo_mode_of(load_bundle("demo-satellite"), RunOptions())
    'exact'
    """
    if options.overlap is not None:
        return GIVEN
    if options.halo_mode is not None:
        return options.halo_mode.value
    if bundle.spec.overlap is not None:
        return GIVEN
    return (HaloMode.EFFECTIVE if bundle.spec.ndim == 3 else HaloMode.EXACT).value


def _halo(bundle: ModelBundle, options: RunOptions, mode: str) -> tuple[int, str]:
    """Halo before any effective measurement, and the mode it ends up with."""
    stride = bundle.spec.stride
    if mode == GIVEN:
        given = options.overlap if options.overlap is not None else bundle.spec.overlap
        return _round_up(given, stride), GIVEN
    if (rf := receptive_field_of(bundle)) > 0:
        return halo_for(rf, stride), mode
    return -1, QUARTER_TILE  # no finite receptive field: tile / 4 once the tile is known


def effective_probe(bundle: ModelBundle, exact: int) -> int | None:
    """The probe's effective halo (kept in the calibration cache); None (stay exact, with a
    warning) when the model cannot be probed."""
    from pipeline.run.halo_check import probed_halo

    try:
        return probed_halo(bundle, exact)
    except Exception as exc:  # noqa: BLE001 - a model the probe cannot run: stay exact
        log.warning("model '%s': effective halo not measurable (%s); using the exact halo %d",
                    bundle.name, exc, exact)
        return None


def _checked(bundle: ModelBundle, exact: int, probed: int,
             grid: TileGrid) -> tuple[int, float] | None:
    """The probed halo checked against whole-scene inference for this plan's split; None
    (stay exact) when the check cannot run."""
    from pipeline.run.halo_check import check_tile_for, checked_halo

    if len(grid) == 1:
        return probed, 1.0  # one window: whole-scene inference itself
    try:
        choice = checked_halo(bundle, exact, probed,
                              check_tile_for(grid.tile, grid.shape, bundle.spec.stride))
    except Exception as exc:  # noqa: BLE001 - a model the check cannot run: stay exact
        log.warning("model '%s': effective halo not checkable (%s); using the exact halo %d",
                    bundle.name, exc, exact)
        return None
    return choice.halo, choice.agreement


def _auto_core(shape: tuple[int, ...], bundle: ModelBundle, options: RunOptions, halo: int,
               workers: int) -> tuple[int, ...]:
    """Cheapest cores whose windows fit the memory budget (3-D models without --tile)."""
    from pipeline.run.window_cost import choose_tile
    from pipeline.run.window_memory import memory_budget, window_memory

    max_window = window_memory(bundle).max_pixels(memory_budget(options, workers))
    return choose_tile(shape, halo=max(halo, 0), stride=bundle.spec.stride, workers=workers,
                       max_window=max_window).tile


def plan_tiles(shape: tuple[int, ...], bundle: ModelBundle, options: RunOptions, *,
               workers: int | None = None) -> TilePlan:
    """Tile cores and halo (module docstring), rounded up to the model stride.

    ``workers``: model workers that run this scene's windows at once (``--workers``
    wins; default 1); it decides whether splitting a volume finishes sooner.

    Examples
    --------
    >>> from pipeline.bundle import load_bundle
    >>> plan = plan_tiles((1000, 700), load_bundle("demo-satellite"), RunOptions(tile=300))
    >>> plan.tile, plan.halo, plan.grid.grid_shape, plan.halo_mode
    (304, 56, (4, 3), 'exact')
    >>> plan = plan_tiles((96, 96, 96), load_bundle("demo-medical"),
    ...                   RunOptions(tile=64, halo_mode="exact"))
    >>> plan.core, plan.halo
    ((64, 64, 64), 56)
    """
    spec = bundle.spec
    stride = spec.stride
    workers = options.workers or workers or 1
    halo, mode = _halo(bundle, options, halo_mode_of(bundle, options))
    exact, agreement = halo, None
    if mode == HaloMode.EFFECTIVE.value:
        if len(_grid(shape, bundle, options, 0, workers)) == 1:
            # one window even without a halo: whole-scene inference, nothing to measure
            return _plan(TileGrid.create(shape, shape, 0, align=stride), options, spec,
                         mode, 1.0)
        if (probed := effective_probe(bundle, exact)) is None:
            mode = HaloMode.EXACT.value
        else:
            halo = probed
    grid = _grid(shape, bundle, options, halo, workers)
    if mode == HaloMode.EFFECTIVE.value:
        checked = _checked(bundle, exact, halo, grid)
        mode = mode if checked is not None else HaloMode.EXACT.value
        checked, agreement = checked or (exact, None)
        if checked != halo:  # the check asked for more context: plan again with it
            halo = checked
            grid = _grid(shape, bundle, options, halo, workers)
    return _plan(grid, options, spec, mode, agreement)


def _plan(grid: TileGrid, options: RunOptions, spec: ModelSpec, mode: str,
          agreement: float | None) -> TilePlan:
    stride = spec.stride
    tile = _round_up(options.tile, stride) if options.tile else max(grid.tile)
    if options.tile is None and spec.ndim != 3:
        tile = _round_up(spec.tile, stride)
    return TilePlan(grid=grid, halo=grid.halo[0], tile=tile, halo_mode=mode,
                    halo_agreement=agreement)


def _grid(shape: tuple[int, ...], bundle: ModelBundle, options: RunOptions, halo: int,
          workers: int) -> TileGrid:
    """The grid for a halo (-1: a quarter of the tile): ``--tile``, else cores by cost
    (3-D), else the bundle's tile."""
    spec, stride = bundle.spec, bundle.spec.stride
    if options.tile or spec.ndim != 3 or halo < 0:
        core = (_round_up(options.tile or spec.tile, stride),) * len(shape)
    else:
        core = _auto_core(shape, bundle, options, halo, workers)
    if halo < 0:
        halo = _round_up(max(core) // 4, stride)
    if "instance" in spec.heads:  # every core pixel's peak test sees its whole NMS window
        halo = max(halo, _round_up(spec.instances.nms_kernel // 2, stride))
    return TileGrid.create(shape, core, halo, align=stride)


def fits_store(plan: TilePlan, group) -> bool:
    """Whether a killed run's label arrays in ``group`` are chunked for this plan's cores
    (automatic cores depend on the workers and memory at hand, which may have changed
    since; tiles of another plan must not be reused)."""
    from pipeline.store import SEMANTIC

    return SEMANTIC not in group or tuple(group[SEMANTIC].chunks) == tuple(plan.grid.chunks)
