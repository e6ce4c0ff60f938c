"""Instance head, targets, grouping and loss: round trips, training, tiling, TorchScript."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tests.segcore.random_models import content_sensitive_unet
from segcore.errors import ConfigError
from segcore.geometry import TileGrid, pad_to_multiple
from segcore.instances import group_instances, instance_targets
from segcore.losses import InstanceLoss, SegmentationLoss
from segcore.models import UNet2d, build_model
from segcore.models.instance_head import InstanceHead
from segcore.receptive_field import halo_for, measure, unet


def _same_up_to_permutation(truth: np.ndarray, pred: np.ndarray) -> bool:
    if not np.array_equal(truth > 0, pred > 0):
        return False
    pairs = {(int(t), int(p)) for t, p in zip(truth.ravel(), pred.ravel())}
    n_true, n_pred = len(np.unique(truth[truth > 0])), len(np.unique(pred[pred > 0]))
    return len(pairs - {(0, 0)}) == n_true == n_pred


def _round_trip(labels: np.ndarray, sigma: float = 2.0, **kwargs: object) -> np.ndarray:
    heat, off, weights = instance_targets(labels, sigma=sigma)
    assert heat.shape == (1,) + labels.shape and heat.dtype == np.float32
    assert off.shape == (labels.ndim,) + labels.shape and off.dtype == np.float32
    assert np.array_equal(weights, (labels > 0).astype(np.float32))
    return group_instances(heat, off, labels > 0, **kwargs).numpy()


def _touching_2d() -> np.ndarray:
    labels = np.zeros((24, 30), dtype=np.int32)
    labels[2:10, 3:9] = 5  # three boxes sharing edges
    labels[2:10, 9:20] = 17
    labels[10:14, 3:20] = 2
    labels[16:22, 22:29] = 900  # isolated, large id
    labels[20:22, 0:2] = 3  # small corner object
    return labels


def _touching_3d() -> np.ndarray:
    labels = np.zeros((10, 16, 14), dtype=np.int64)
    labels[1:5, 2:8, 2:12] = 1
    labels[5:9, 2:8, 2:12] = 2  # touches 1 along z
    labels[1:9, 8:15, 2:6] = 3  # touches 1 and 2 along y
    labels[2:4, 10:13, 8:13] = 4
    return labels


@pytest.mark.parametrize("make", [_touching_2d, _touching_3d])
@pytest.mark.parametrize("sigma", [1.0, 4.0])
def test_round_trip_recovers_touching_instances(make, sigma: float) -> None:
    labels = make()
    pred = _round_trip(labels, sigma=sigma)
    assert pred.dtype == np.int64
    assert _same_up_to_permutation(labels, pred)
    assert sorted(np.unique(pred[pred > 0]).tolist()) == list(range(1, len(np.unique(labels))))


@st.composite
def _partitions(draw: st.DrawFn) -> np.ndarray:
    """Random box partitions (touching boxes, some background), 2-D or 3-D."""
    ndim = draw(st.sampled_from([2, 3]))
    cuts = []
    for _ in range(ndim):
        size = draw(st.integers(6, 20 if ndim == 2 else 10))
        inner = draw(st.lists(st.integers(1, size - 1), max_size=3, unique=True))
        cuts.append([0, *sorted(inner), size])
    shape = tuple(c[-1] for c in cuts)
    labels = np.zeros(shape, dtype=np.int64)
    cells = np.indices([len(c) - 1 for c in cuts]).reshape(ndim, -1).T
    ids = draw(st.permutations(range(1, len(cells) + 1)))
    for cell, label in zip(cells, ids):
        if draw(st.booleans()) or label == 1:
            labels[tuple(slice(c[i], c[i + 1]) for c, i in zip(cuts, cell))] = label * 7
    return labels


@settings(max_examples=40, deadline=None)
@given(labels=_partitions())
def test_round_trip_property(labels: np.ndarray) -> None:
    assert _same_up_to_permutation(labels, _round_trip(labels, sigma=1.5))


def test_targets_values_and_tensor_input() -> None:
    labels = torch.zeros(7, 9, dtype=torch.int64)
    labels[1:4, 2:7] = 3  # centre (2, 4)
    heat, off, weights = instance_targets(labels, sigma=1.0)
    assert isinstance(heat, torch.Tensor) and heat.dtype == torch.float32
    assert heat[0, 2, 4] == 1.0 and heat.max() == 1.0
    assert heat[0, 2, 5] == pytest.approx(np.exp(-0.5))
    assert off[:, 1, 2].tolist() == [1.0, 2.0] and off[:, 0, 0].tolist() == [0.0, 0.0]
    assert weights.sum() == 15
    empty = instance_targets(np.zeros((4, 4), dtype=np.uint8), sigma=2)
    assert all(not a.any() for a in empty)


@pytest.mark.parametrize(
    ("labels", "sigma", "match"),
    [(np.zeros((3, 3), float), 1.0, "integer"), (np.full((3, 3), -1), 1.0, ">= 0"),
     (np.zeros((3, 3), int), 0.0, "sigma")],
)
def test_targets_reject_bad_input(labels: np.ndarray, sigma: float, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        instance_targets(labels, sigma=sigma)


def test_grouping_edge_cases() -> None:
    labels = _touching_2d()
    heat, off, _ = instance_targets(labels, sigma=2.0)
    mask = labels > 0
    assert not group_instances(heat * 0, off, mask).any()  # no centre above threshold
    top2 = group_instances(heat, off, mask, top_k=2).numpy()
    assert set(np.unique(top2).tolist()) == {0, 1, 2} and np.array_equal(top2 > 0, mask)
    with pytest.raises(ConfigError, match="nms_kernel"):
        group_instances(heat, off, mask, nms_kernel=4)
    with pytest.raises(ConfigError, match="offsets"):
        group_instances(heat, off[:1], mask)


def test_instance_loss_terms_and_errors() -> None:
    loss = InstanceLoss(center_weight=2.0, offset_weight=3.0)
    c, o = torch.zeros(2, 1, 4, 4, requires_grad=True), torch.zeros(2, 2, 4, 4, requires_grad=True)
    total = loss(c, o, torch.ones(2, 1, 4, 4), torch.ones(2, 2, 4, 4), torch.zeros(2, 4, 4))
    assert total.item() == pytest.approx(2.0)  # no instance pixel: offset term 0, not NaN
    total.backward()
    assert torch.isfinite(o.grad).all()
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = True
    terms = loss.terms(c, o, torch.ones(2, 1, 4, 4), torch.ones(2, 2, 4, 4), mask.float(), mask)
    assert terms["center"].item() == 1.0 and terms["offset"].item() == 2.0
    with pytest.raises(ConfigError, match="weights"):
        loss(c, o, torch.ones(2, 1, 4, 4), torch.ones(2, 2, 4, 4), torch.zeros(2, 4))
    with pytest.raises(ConfigError, match="center_weight"):
        InstanceLoss(center_weight=-1.0)


def test_head_shapes_and_model_outputs() -> None:
    assert not any(isinstance(m, nn.BatchNorm3d) for m in InstanceHead(4, ndim=3).modules())
    with pytest.raises(ConfigError, match="ndim"):
        InstanceHead(4, ndim=4)
    model = build_model("unet2d", in_channels=2, num_classes=3, base_channels=4, depth=2,
                        instance_head=True)
    assert model.instance_head and model.receptive_field == unet(2, 2)
    out = model.eval()(torch.randn(2, 2, 16, 24))
    assert list(out) == ["semantic", "center", "offset"]
    assert [tuple(v.shape) for v in out.values()] == [(2, 3, 16, 24), (2, 1, 16, 24), (2, 2, 16, 24)]
    assert isinstance(UNet2d(2, 3, base_channels=4, depth=2)(torch.randn(1, 2, 8, 8)), torch.Tensor)
    with pytest.raises(ConfigError, match="instance_head"):
        UNet2d(2, 3, instance_head=1)


def test_torchscript_with_instance_head() -> None:
    model = UNet2d(2, 3, base_channels=4, depth=2, instance_head=True).eval()
    scripted = torch.jit.script(model)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    x = torch.randn(1, 2, 16, 16)
    expected, got = model(x), loaded(x)
    assert list(got) == ["semantic", "center", "offset"]
    assert all(torch.allclose(expected[k], got[k]) for k in expected)


class _Pick(nn.Module):
    def __init__(self, model: UNet2d, key: str) -> None:
        super().__init__()
        self.model, self.key, self.stride = model, key, model.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[self.key]


@pytest.mark.parametrize("key", ["center", "offset"])
def test_head_does_not_change_receptive_field(key: str) -> None:
    torch.manual_seed(3)
    model = UNet2d(2, 3, base_channels=4, depth=2, convs_per_level=1, instance_head=True)
    assert measure(_Pick(model, key), in_channels=2) == unet(2, 1) == model.receptive_field


def _random_model(seed: int) -> UNet2d:
    return content_sensitive_unet(seed, depth=2, instance_head=True)


def _run(model: UNet2d, image: torch.Tensor) -> dict[str, torch.Tensor]:
    padded, (h, w) = pad_to_multiple(image, model.stride, spatial_dims=2)
    return {k: v[..., :h, :w] for k, v in model(padded).items()}


def _tiled(model: UNet2d, image: torch.Tensor, grid: TileGrid) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for tile in grid:
        window = image[(slice(None), slice(None)) + tile.halo.slices]
        for key, value in _run(model, window).items():
            full = out.setdefault(key, torch.empty(1, value.shape[1], *image.shape[-2:]))
            full[(slice(None), slice(None)) + tile.core.slices] = value[
                (slice(None), slice(None)) + tile.core_in_halo.slices
            ]
    return out


@pytest.mark.parametrize(("size", "tile"), [((96, 96), 32), ((70, 54), 16)])
@torch.no_grad()
def test_tiled_head_outputs_equal_whole_image(size: tuple[int, int], tile: int) -> None:
    model = _random_model(0)
    halo = halo_for(model.receptive_field, model.stride)
    image = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(2))
    whole = _run(model, image)
    grid = TileGrid.create(size, tile=tile, halo=halo, align=model.stride)
    assert len(grid) > 4
    tiled = _tiled(model, image, grid)
    for key in ("semantic", "center", "offset"):
        assert (tiled[key] - whole[key]).abs().max().item() <= 1e-4, key
    # Control: a short halo visibly changes the head outputs.
    short = _tiled(model, image, TileGrid.create(size, tile=tile, halo=4, align=model.stride))
    for key in ("center", "offset"):
        assert (short[key] - whole[key]).abs().max().item() > 1e-2, key


def _toy_batch(gen: np.random.Generator, n: int = 4, size: int = 32):
    """Images of bright rectangles (class 1, one instance each) on noise."""
    images, semantic, heat, off, weights = [], [], [], [], []
    for _ in range(n):
        labels = np.zeros((size, size), dtype=np.int64)
        for k in range(1, 4):
            y, x = gen.integers(0, size - 8, 2)
            h, w = gen.integers(4, 9, 2)
            labels[y : y + h, x : x + w] = k
        image = (labels > 0).astype(np.float32) + 0.1 * gen.standard_normal((size, size))
        c, o, wt = instance_targets(labels, sigma=2.0)
        images.append(image[None].astype(np.float32))
        semantic.append((labels > 0).astype(np.int64))
        heat.append(c), off.append(o), weights.append(wt)
    return tuple(torch.from_numpy(np.stack(a)) for a in (images, semantic, heat, off, weights))


def test_tiny_model_trains_on_rectangles() -> None:
    torch.manual_seed(0)
    gen = np.random.default_rng(0)
    model = UNet2d(1, 2, base_channels=8, depth=2, instance_head=True)
    semantic_loss, instance_loss = SegmentationLoss(), InstanceLoss()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, sem, heat, off, weights = _toy_batch(gen)
    losses = []
    for _ in range(25):
        out = model(x)
        loss = semantic_loss(out["semantic"], sem) + instance_loss(
            out["center"], out["offset"], heat, off, weights
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses
