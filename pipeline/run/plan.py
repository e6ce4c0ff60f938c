"""The tile plan of a scene: tile core size, halo and the grid, from options and bundle."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from pipeline.bundle import ModelBundle, ModelFormat, load_bundle
from pipeline.options import RunOptions
from segcore.geometry.grid import TileGrid
from segcore.receptive_field import halo_for, measure


@dataclass(frozen=True)
class TilePlan:
    """The grid a scene is tiled with; ``tile`` and ``halo`` as chosen (pixels)."""

    grid: TileGrid
    halo: int
    tile: int


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@lru_cache(maxsize=16)
def _measured_receptive_field(path: str, mtime_ns: int) -> int:
    bundle = load_bundle(path)
    net = bundle.build()
    declared = int(getattr(net, "receptive_field", 0) or 0)
    if declared or bundle.spec.format is ModelFormat.STATE_DICT:
        return declared
    try:  # TorchScript / torch.export: structure unknown, probe it
        return int(measure(net, bundle.spec.input.channels, ndim=bundle.spec.ndim) or 0)
    except Exception:  # noqa: BLE001 - a model that cannot be probed gets the default halo
        return 0


def receptive_field_of(bundle: ModelBundle) -> int:
    """The bundle's receptive field: declared in ``model.yaml``, else the architecture's
    analytic value, else measured by a gradient probe (0 = unknown or global)."""
    if bundle.spec.receptive_field is not None:
        return bundle.spec.receptive_field
    weights = bundle.weights_path
    return _measured_receptive_field(str(bundle.path), weights.stat().st_mtime_ns)


def plan_tiles(shape: tuple[int, ...], bundle: ModelBundle, options: RunOptions) -> TilePlan:
    """Tile and halo sizes: options, else the bundle, rounded up to the model stride.

    The default halo is half the model's receptive field (rounded up to the stride),
    which makes tiled output equal whole-scene output for a convolutional model.

    Examples
    --------
    >>> from pipeline.bundle import load_bundle
    >>> plan = plan_tiles((1000, 700), load_bundle("demo-satellite"), RunOptions(tile=300))
    >>> plan.tile, plan.halo, plan.grid.grid_shape
    (304, 56, (4, 3))
    """
    spec = bundle.spec
    stride = spec.stride
    tile = _round_up(options.tile or spec.tile, stride)
    if options.overlap is not None:
        halo = options.overlap
    elif spec.overlap is not None:
        halo = spec.overlap
    elif (rf := receptive_field_of(bundle)) > 0:
        halo = halo_for(rf, stride)
    else:  # global models (attention): no finite receptive field
        halo = tile // 4
    halo = _round_up(halo, stride)
    grid = TileGrid.create(shape, tile, halo, align=stride)
    return TilePlan(grid=grid, halo=halo, tile=tile)
