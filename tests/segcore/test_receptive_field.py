"""Receptive fields: closed forms, U-Net analytic == measured, tiled == untiled."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from tests.segcore.random_models import content_sensitive_unet
from segcore.errors import ConfigError
from segcore.geometry import TileGrid, pad_to_multiple
from segcore.models import UNet2d
from segcore.receptive_field import (
    Layer,
    aspp,
    chain,
    dilated_stack,
    halo_for,
    measure,
    unet,
)




def test_seed_worked_example() -> None:
    assert aspp(51, 8, 3, [2, 4, 6]) == 51 + 2 * 8 * 12 == 243
    assert aspp(51, 8, 3, (2, 4, 6), mode="parallel") == 51 + 2 * 8 * 6 == 147


def test_aspp_unknown_mode_has_hint() -> None:
    with pytest.raises(ConfigError, match="did you mean 'parallel'"):
        aspp(51, 8, 3, [2], mode="paralel")
    with pytest.raises(ConfigError, match="dilations"):
        aspp(51, 8, 3, [])


@pytest.mark.parametrize(("k", "d", "l"), [(3, 1, 1), (3, 2, 3), (5, 3, 2), (1, 4, 7), (3, 1, 0)])
def test_dilated_stack_matches_chain_and_measure(k: int, d: int, l: int) -> None:
    expected = 1 + l * d * (k - 1)
    assert dilated_stack(k, d, l) == expected
    assert chain([Layer(k, dilation=d)] * l) == expected
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Identity()]
    for _ in range(l):
        layers += [nn.Conv2d(4 if layers[1:] else 1, 4, k, padding=d * (k // 2), dilation=d), nn.ReLU()]
    assert measure(nn.Sequential(*layers), in_channels=1) == expected


def test_chain_with_strides() -> None:
    # conv3, pool2/2, conv3, pool2/2, conv3: 1 + 2 + 1*1 + 2*2 + 1*2 + 2*4 = 18
    layers = [Layer(3), Layer(2, 2), Layer(3), Layer(2, 2), Layer(3)]
    assert chain(layers) == 18
    with pytest.raises(ConfigError, match="Layer.stride"):
        Layer(3, stride=0)


@pytest.mark.parametrize(("rf", "align", "halo"), [(1, 8, 0), (5, 1, 2), (6, 1, 3), (103, 8, 56), (215, 16, 112)])
def test_halo_for(rf: int, align: int, halo: int) -> None:
    assert halo_for(rf, align) == halo


@pytest.mark.parametrize(
    ("depth", "convs", "samples"),
    [(1, 1, 4), (1, 2, 4), (2, 1, 4), (2, 2, 4), (3, 1, 4), (3, 2, 4), (4, 2, 2)],
)
def test_unet_analytic_equals_measured(depth: int, convs: int, samples: int) -> None:
    torch.manual_seed(depth * 10 + convs)
    model = UNet2d(2, 3, base_channels=4, depth=depth, convs_per_level=convs)
    assert measure(model, in_channels=2, samples=samples) == unet(depth, convs)


def test_unet_reference_values() -> None:
    assert unet(3, 2) == 103
    assert unet(4, 2) == 215
    assert unet(0, 3) == dilated_stack(3, 1, 3)
    assert unet(2, 1, kernel=5) == measure(
        UNet2d(1, 2, base_channels=8, depth=2, convs_per_level=1, kernel_size=5), 1
    )


def test_measure_restores_training_mode_and_leaves_weights() -> None:
    model = UNet2d(1, 2, base_channels=4, depth=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    measure(model, 1)
    assert model.training
    model.eval()
    measure(model, 1)
    assert not model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_measure_too_small_size_is_an_error() -> None:
    with pytest.raises(ConfigError, match="size"):
        measure(UNet2d(1, 2, base_channels=4, depth=2), 1, size=16)


def _random_model(seed: int) -> UNet2d:
    return content_sensitive_unet(seed, depth=3)


def _tiled(model: UNet2d, image: torch.Tensor, grid: TileGrid) -> torch.Tensor:
    out = torch.empty(1, model.num_classes, *image.shape[-2:])
    for tile in grid:
        window = image[(slice(None), slice(None)) + tile.halo.slices]
        padded, (h, w) = pad_to_multiple(window, model.stride, spatial_dims=2)
        logits = model(padded)[..., :h, :w]
        out[(slice(None), slice(None)) + tile.core.slices] = logits[
            (slice(None), slice(None)) + tile.core_in_halo.slices
        ]
    return out


@pytest.mark.parametrize(("size", "tile"), [((256, 256), 64), ((100, 92), 32)])
@torch.no_grad()
def test_tiled_inference_equals_whole_image(size: tuple[int, int], tile: int) -> None:
    """The product's core promise: tiles with halo_for(rf) reproduce the whole image.

    (100, 92) is not a multiple of the stride: edge windows are padded at
    their far end exactly like the whole scene.
    """
    model = _random_model(0)
    halo = halo_for(model.receptive_field, model.stride)
    assert halo == 56
    image = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(2))
    padded, (h, w) = pad_to_multiple(image, model.stride, spatial_dims=2)
    whole = model(padded)[..., :h, :w]
    grid = TileGrid.create(size, tile=tile, halo=halo, align=model.stride)
    assert len(grid) > 4
    tiled = _tiled(model, image, grid)
    assert (tiled - whole).abs().max().item() <= 1e-4
    assert torch.equal(tiled.argmax(1), whole.argmax(1))
    # Control: the comparison is sensitive, a short halo visibly breaks it.
    short = _tiled(model, image, TileGrid.create(size, tile=tile, halo=8, align=model.stride))
    assert not torch.equal(short.argmax(1), whole.argmax(1))
