"""Shared by the cluster scripts (each runs as its own process, with its own Ray).

``setup`` comes first in each script's main: no Ray telemetry or token file, no
inherited RAY_ADDRESS, and Ray's temp dir (sessions, and the ``ray_current_cluster``
file that a plain ``ray.init()`` would join) private to the run. Importing this
module has no side effects (pytest's --doctest-modules imports it).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def setup(ray_tmp: str) -> None:
    """Environment for this process's Ray (read by ray.init, not at import)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.pop("RAY_ADDRESS", None)
    os.environ["RAY_TMPDIR"] = ray_tmp
    os.makedirs(os.path.join(ray_tmp, "ray"), exist_ok=True)


def build_bundle(directory: Path):
    """The conftest ``tiny_bundle``: a seeded random-weight 3-band U-Net."""
    import torch

    from pipeline.bundle import ClassSpec, InputSpec, ModelSpec, save_bundle
    from segcore.models.factory import build_model
    from segcore.synthetic.satellite import SATELLITE_CLASSES

    torch.manual_seed(0)
    params = {"in_channels": 3, "num_classes": 5, "base_channels": 4, "depth": 2}
    net = build_model("unet2d", **params).eval()
    spec = ModelSpec(
        name="tiny", architecture="unet2d", params=params, weights="model.safetensors",
        input=InputSpec(channels=3, mean=[0.5] * 3, std=[0.25] * 3),
        classes=[ClassSpec(id=c.id, name=c.name, isthing=c.isthing, color=c.color)
                 for c in SATELLITE_CLASSES],
        tile=256, receptive_field=int(net.receptive_field), stride=int(net.stride),
    )
    directory.mkdir(parents=True, exist_ok=True)
    return save_bundle(directory, spec, net.state_dict())


def write_image(path: Path, size: tuple[int, int] = (512, 768), seed: int = 7) -> Path:
    from pipeline.synthdata.satellite import write_scene
    from segcore.synthetic.satellite import SatelliteSceneSpec

    path.parent.mkdir(parents=True, exist_ok=True)
    write_scene(path, spec=SatelliteSceneSpec(seed=seed, height=size[0], width=size[1], bands=3))
    return path


def run_one(image: Path, out_dir: Path, bundle, pool, *, tile: int = 256) -> dict:
    """One scene end to end (plain Python, no Prefect); returns its report."""
    from pipeline.formats import Scene
    from pipeline.options import RunOptions
    from pipeline.run import Workspace, run_scene

    scene = Scene(image, image.name.removesuffix(".tif"), "geotiff")
    ws = Workspace(scene, out_dir)
    return run_scene(ws, bundle, RunOptions(tile=tile), pool).report.to_json()


def emit(result: dict) -> None:
    """The result as the last line of stdout (the test parses it)."""
    sys.stdout.flush()
    print(json.dumps(result), flush=True)
