"""UNet2d and the model factory."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from segcore.errors import ConfigError, ModelError
from segcore.models import ARCHITECTURES, UNet2d, build_model




def test_forward_shape_stride_and_attributes() -> None:
    model = UNet2d(3, 5, base_channels=4, depth=3).eval()
    assert model.stride == 8 and model.ndim == 2
    out = model(torch.randn(2, 3, 24, 40))
    assert out.shape == (2, 5, 24, 40) and out.dtype == torch.float32


def test_widths_double_per_level() -> None:
    model = UNet2d(1, 2, base_channels=4, depth=2, convs_per_level=1)
    convs = [m.out_channels for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [4, 8]
    assert model.bottleneck[0].out_channels == 16


def test_only_local_ops() -> None:
    """Tiled == untiled needs per-pixel normalisation only (BatchNorm in eval)."""
    model = UNet2d(2, 3, base_channels=4, depth=2)
    forbidden = (nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm, nn.AdaptiveAvgPool2d)
    assert not any(isinstance(m, forbidden) for m in model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize(("shape", "match"), [((1, 3, 20, 16), "multiples of the stride 8"),
                                              ((1, 2, 16, 16), r"\(N, 3, H, W\)")])
def test_forward_rejects_bad_inputs(shape: tuple, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        UNet2d(3, 2, base_channels=2, depth=3)(torch.zeros(shape))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(in_channels=0, num_classes=2), "in_channels"),
        (dict(in_channels=1, num_classes=2, kernel_size=4), "kernel_size: expected an odd"),
        (dict(in_channels=1, num_classes=2, depth=-1), "depth"),
        (dict(in_channels=1, num_classes=2, base_channels=1.5), "base_channels"),
    ],
)
def test_constructor_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        UNet2d(**kwargs)


def test_receptive_field_property() -> None:
    assert UNet2d(1, 2, depth=3, convs_per_level=2).receptive_field == 103
    assert UNet2d(1, 2, depth=4, convs_per_level=2).receptive_field == 215


def test_factory_builds_registered_architectures() -> None:
    assert ARCHITECTURES["unet2d"] is UNet2d
    model = build_model("unet2d", in_channels=2, num_classes=3, base_channels=4, depth=1)
    assert isinstance(model, UNet2d) and model.stride == 2


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("unet2", dict(in_channels=1, num_classes=2), "did you mean 'unet2d'"),
        ("unet2d", dict(in_channels=1, num_classes=2, dept=2), "unknown parameter 'dept'.*did you mean 'depth'"),
        ("unet2d", dict(in_channels=1), r"missing required parameter\(s\) \['num_classes'\]"),
        ("unet2d", dict(in_channels=1, num_classes=0), "num_classes"),
    ],
)
def test_factory_errors(name: str, params: dict, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        build_model(name, **params)
