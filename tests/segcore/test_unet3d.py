"""UNet3d: shapes, stride, receptive field, tiled == whole-volume inference."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from segcore.errors import ConfigError
from segcore.models.factory import ARCHITECTURES, build_model
from segcore.models.unet import UNet2d, UNet3d
from segcore.receptive_field import halo_for, measure, unet
from tests.segcore.random_models import randomise


def _random_unet3d(seed: int, **params) -> UNet3d:
    """Eval-mode UNet3d with content-sensitive weights and non-trivial BatchNorm."""
    torch.manual_seed(seed)
    model = UNet3d(1, 3, **{"base_channels": 2, "convs_per_level": 1, **params})
    return randomise(model, seed + 1)


def test_forward_shape_stride_and_attributes() -> None:
    model = UNet3d(1, 3, base_channels=2, depth=2).eval()
    assert model.stride == 4 and model.ndim == 3
    out = model(torch.randn(2, 1, 8, 12, 16))
    assert out.shape == (2, 3, 8, 12, 16) and out.dtype == torch.float32
    assert model.receptive_field == unet(2, 2)


def test_only_local_3d_ops() -> None:
    model = UNet3d(1, 2, base_channels=2, depth=2)
    forbidden = (nn.GroupNorm, nn.InstanceNorm3d, nn.LayerNorm, nn.AdaptiveAvgPool3d,
                 nn.Conv2d, nn.BatchNorm2d)
    assert not any(isinstance(m, forbidden) for m in model.modules())
    assert any(isinstance(m, nn.BatchNorm3d) for m in model.modules())
    assert isinstance(model.pool, nn.MaxPool3d)


def test_parameter_names_match_unet2d() -> None:
    """One N-D body: the same parameter names (UNet2d bundles keep loading)."""
    a = UNet2d(1, 3, base_channels=2, depth=2, instance_head=True).state_dict()
    b = UNet3d(1, 3, base_channels=2, depth=2, instance_head=True).state_dict()
    assert list(a) == list(b)
    assert all(b[k].ndim == a[k].ndim + 1 for k in a if a[k].ndim >= 3)


def test_instance_head_shapes() -> None:
    model = UNet3d(1, 3, base_channels=2, depth=1, instance_head=True).eval()
    out = model(torch.zeros(1, 1, 4, 6, 8))
    assert list(out) == ["semantic", "center", "offset"]
    assert out["semantic"].shape == (1, 3, 4, 6, 8)
    assert out["center"].shape == (1, 1, 4, 6, 8)
    assert out["offset"].shape == (1, 3, 4, 6, 8)  # (dz, dy, dx)


@pytest.mark.parametrize(("shape", "match"), [
    ((1, 1, 8, 6, 8), "multiples of the stride 4"),
    ((1, 1, 8, 8), r"\(N, 1, D, H, W\)"),
    ((1, 2, 8, 8, 8), r"\(N, 1, D, H, W\)"),
])
def test_forward_rejects_bad_inputs(shape: tuple, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        UNet3d(1, 2, base_channels=2, depth=2)(torch.zeros(shape))


def test_constructor_validation_names_the_class() -> None:
    with pytest.raises(ConfigError, match="UNet3d kernel_size"):
        UNet3d(1, 2, kernel_size=4)


@pytest.mark.parametrize(("depth", "convs"), [(1, 1), (2, 1)])
def test_analytic_receptive_field_equals_measured(depth: int, convs: int) -> None:
    model = _random_unet3d(0, depth=depth, convs_per_level=convs)
    assert model.receptive_field == measure(model, 1, ndim=3, samples=2)


def test_factory_registers_unet3d() -> None:
    assert ARCHITECTURES["unet3d"] is UNet3d
    model = build_model("unet3d", in_channels=1, num_classes=3, base_channels=2, depth=1)
    assert isinstance(model, UNet3d) and model.stride == 2


@pytest.mark.parametrize("instance_head", [False, True])
def test_tiled_inference_equals_whole_volume(instance_head: bool) -> None:
    model = _random_unet3d(3, depth=2, instance_head=instance_head)
    stride, size, tile = model.stride, 32, 8
    halo = halo_for(model.receptive_field, stride)
    x = torch.randn(1, 1, size, size, size, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        whole = model(x)
        whole = whole if isinstance(whole, dict) else {"semantic": whole}
        tiled = {k: torch.full_like(v, float("nan")) for k, v in whole.items()}
        for origin in itertools.product(range(0, size, tile), repeat=3):
            lo = [max(o - halo, 0) for o in origin]
            hi = [min(o + tile + halo, size) for o in origin]
            out = model(x[(..., *(slice(a, b) for a, b in zip(lo, hi)))])
            out = out if isinstance(out, dict) else {"semantic": out}
            core = tuple(slice(o - a, o - a + tile) for o, a in zip(origin, lo))
            dest = tuple(slice(o, o + tile) for o in origin)
            for k, v in out.items():
                tiled[k][(..., *dest)] = v[(..., *core)]
    for k in whole:
        torch.testing.assert_close(tiled[k], whole[k], rtol=1e-4, atol=1e-4)
