"""Session fixtures: a 2-CPU local Ray, Prefect's test harness, model bundles, scenes.

The environment Prefect and Ray need is set by the repository's top-level
``conftest.py``, before either is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_TMP = Path(os.environ["SEGPIPE_TEST_TMP"])


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray runtime with 2 CPUs for the whole session."""
    import ray

    (_TMP / "ray").mkdir(exist_ok=True)
    from pipeline.inference.runtime import LOCAL_SYSTEM_CONFIG

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="segpipe",
             _temp_dir=str(_TMP / "ray"), _system_config=LOCAL_SYSTEM_CONFIG)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test harness (a temporary database), flows without heartbeat waits."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120), \
            temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@pytest.fixture(scope="session")
def demo_bundle():
    """The bundled demo-satellite model."""
    from pipeline.bundle import load_bundle

    return load_bundle("demo-satellite")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A small random-weight 3-band U-Net bundle: fast, for I/O-focused tests."""
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
    return save_bundle(tmp_path_factory.mktemp("tiny-bundle"), spec, net.state_dict())


@pytest.fixture(scope="module")
def tiny_pool(ray_session, tiny_bundle):
    from pipeline.inference.pool import PoolConfig, WorkerPool

    pool = WorkerPool(str(tiny_bundle.path), PoolConfig(workers=2, batch_size=4))
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def demo_pool(ray_session, demo_bundle):
    from pipeline.inference.pool import PoolConfig, WorkerPool

    pool = WorkerPool(str(demo_bundle.path), PoolConfig(workers=2, batch_size=4))
    yield pool
    pool.shutdown()


@pytest.fixture(scope="session")
def scene_factory(tmp_path_factory):
    """Write (and cache) synthetic GeoTIFF scenes + labels: ``make(name, **kw)``."""
    from pipeline.synthdata.satellite import write_scene
    from segcore.synthetic.satellite import SatelliteSceneSpec

    root = tmp_path_factory.mktemp("scenes")
    cache: dict[tuple, tuple[Path, Path]] = {}

    def make(name: str, *, size: tuple[int, int] = (512, 512), seed: int = 7, bands: int = 3,
             **kwargs) -> tuple[Path, Path]:
        key = (name, size, seed, bands, tuple(sorted(kwargs.items())))
        if key not in cache:
            image, labels = root / f"{name}.tif", root / f"{name}_labels.tif"
            spec = SatelliteSceneSpec(seed=seed, height=size[0], width=size[1], bands=bands)
            write_scene(image, spec=spec, label_path=labels, **kwargs)
            cache[key] = (image, labels)
        return cache[key]

    return make


@pytest.fixture(scope="session", autouse=True)
def _single_torch_thread():
    """Torch in the test process uses one thread: the Ray workers need the other core,
    and oversubscribed small convolutions are many times slower on 2 cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_instance_bundle(tmp_path_factory, tiny_bundle):
    """The tiny U-Net with a (random) centre/offset instance head."""
    import torch

    from pipeline.bundle import InstanceSpec, save_bundle
    from segcore.models.factory import build_model

    torch.manual_seed(1)
    params = {**tiny_bundle.spec.params, "instance_head": True}
    net = build_model("unet2d", **params).eval()
    spec = tiny_bundle.spec.model_copy(update={
        "name": "tiny-instances", "params": params, "heads": ["semantic", "instance"],
        "instances": InstanceSpec(threshold=0.0, nms_kernel=9)})
    return save_bundle(tmp_path_factory.mktemp("tiny-inst"), spec, net.state_dict())


@pytest.fixture(scope="module")
def tiny_instance_pool(ray_session, tiny_instance_bundle):
    from pipeline.inference.pool import PoolConfig, WorkerPool

    pool = WorkerPool(str(tiny_instance_bundle.path), PoolConfig(workers=2, batch_size=4))
    yield pool
    pool.shutdown()
