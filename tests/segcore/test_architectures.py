"""DeepLab-ASPP, ViT and query-based set prediction: shapes, receptive fields,
attention, matching, and a few training steps on a tiny synthetic task."""

from __future__ import annotations

import itertools

import pytest
import torch

from segcore.errors import ConfigError, ModelError
from segcore.losses.set_prediction import SetPredictionLoss, masks_to_boxes, semantic_targets
from segcore.models.deeplab import DeepLabASPP, backbone_receptive_field
from segcore.models.factory import ARCHITECTURES, build_model
from segcore.models.set_prediction import QueryMaskModel
from segcore.models.vit import ViTSegmenter, attention_error_correlation
from segcore.receptive_field import aspp, measure

K = 3  # classes of the toy task


def _toy_batch(generator: torch.Generator, n: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with two coloured rectangles (classes 1, 2) on a background (class 0), noisy."""
    colours = torch.tensor([[0.2, 0.5, 0.2], [0.8, 0.2, 0.2], [0.2, 0.2, 0.9]])
    labels = torch.zeros(n, size, size, dtype=torch.int64)
    for i in range(n):
        for cls in (1, 2):
            y0, x0 = torch.randint(0, size // 2, (2,), generator=generator).tolist()
            h, w = torch.randint(size // 4, size // 2, (2,), generator=generator).tolist()
            labels[i, y0:y0 + h, x0:x0 + w] = cls
    image = colours[labels].permute(0, 3, 1, 2)
    image = image + 0.05 * torch.randn(image.shape, generator=generator)
    return (image - 0.4) / 0.25, labels


def _train(net: torch.nn.Module, loss_fn, steps: int, lr: float) -> list[float]:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    batches = [_toy_batch(generator) for _ in range(4)]
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    losses = []
    for step in range(steps):
        x, y = batches[step % len(batches)]
        loss = loss_fn(net(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses


def _falls(losses: list[float]) -> bool:
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    return last < 0.8 * first


def test_registered_names():
    assert {"unet2d", "unet3d", "deeplab", "vit", "queries"} <= set(ARCHITECTURES)
    assert isinstance(build_model("deeplab", in_channels=3, num_classes=2), DeepLabASPP)
    assert isinstance(build_model("vit", in_channels=3, num_classes=2), ViTSegmenter)
    assert isinstance(build_model("queries", in_channels=3, num_classes=2), QueryMaskModel)
    with pytest.raises(ModelError, match="did you mean 'deeplab'"):
        build_model("deeplb", in_channels=3, num_classes=2)


# --- DeepLab ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["parallel", "cascade"])
def test_deeplab_shape_and_receptive_field(mode):
    torch.manual_seed(0)
    net = DeepLabASPP(3, 4, base_channels=4, stride=8, dilations=(2, 4, 6), aspp_mode=mode)
    assert net(torch.randn(2, 3, 40, 24)).shape == (2, 4, 40, 24)
    r_base = backbone_receptive_field(8)
    assert net.receptive_field == aspp(r_base, 8, 3, (2, 4, 6), mode=mode)
    assert net.receptive_field == measure(net, 3)


def test_deeplab_receptive_field_other_stride():
    torch.manual_seed(0)
    net = DeepLabASPP(2, 2, base_channels=4, stride=4, dilations=(1, 3), aspp_mode="cascade")
    assert net.receptive_field == measure(net, 2)


def test_deeplab_rejects_bad_options():
    with pytest.raises(ConfigError, match="did you mean"):
        DeepLabASPP(3, 2, aspp_mode="paralel")
    with pytest.raises(ConfigError, match="power of two"):
        DeepLabASPP(3, 2, stride=6)
    with pytest.raises(ConfigError, match="multiples of the stride"):
        DeepLabASPP(3, 2)(torch.zeros(1, 3, 20, 16))


def test_deeplab_trains():
    torch.manual_seed(0)
    net = DeepLabASPP(3, K, base_channels=8, stride=4, dilations=(1, 2))
    losses = _train(net, torch.nn.functional.cross_entropy, steps=20, lr=1e-2)
    assert _falls(losses), losses


# --- ViT ----------------------------------------------------------------------------


def test_vit_shapes_any_grid():
    torch.manual_seed(0)
    net = ViTSegmenter(3, 5, patch=8, dim=32, depth=2, heads=4).eval()
    assert net.stride == 8 and net.receptive_field == 0
    for h, w in [(32, 32), (24, 56)]:
        assert net(torch.randn(2, 3, h, w)).shape == (2, 5, h, w)
    with pytest.raises(ConfigError, match="multiples of the patch"):
        net(torch.zeros(1, 3, 20, 16))
    with pytest.raises(ConfigError, match="max_patches"):
        ViTSegmenter(3, 2, patch=8, dim=32, max_patches=4)(torch.zeros(1, 3, 24, 24))


def test_vit_attention_maps_sum_to_one():
    torch.manual_seed(0)
    net = ViTSegmenter(3, 5, patch=8, dim=32, depth=2, heads=4).eval()
    maps = net.attention_maps(torch.randn(2, 3, 32, 48))
    assert maps.shape == (2, 4, 4, 6)
    assert (maps >= 0).all()
    torch.testing.assert_close(maps.sum(dim=(2, 3)), torch.ones(2, 4))


def test_attention_error_correlation_hand_example():
    attn = [[0.1, 0.2], [0.3, 0.4]]
    assert attention_error_correlation(attn, [[1, 2], [3, 4]]) == pytest.approx(1.0)
    assert attention_error_correlation(attn, [[4, 3], [2, 1]]) == pytest.approx(-1.0)
    # x = (1, 2, 3), e = (1, 3, 2): r = 0.5 by hand
    assert attention_error_correlation(torch.tensor([[1.0, 2.0, 3.0]]),
                                       torch.tensor([[1.0, 3.0, 2.0]])) == pytest.approx(0.5)
    assert attention_error_correlation(attn, [[1, 1], [1, 1]]) != attention_error_correlation(attn, attn)
    with pytest.raises(ConfigError):
        attention_error_correlation(attn, [[1, 2, 3]])


def test_vit_trains():
    torch.manual_seed(0)
    net = ViTSegmenter(3, K, patch=4, dim=32, depth=2, heads=4)
    losses = _train(net, torch.nn.functional.cross_entropy, steps=25, lr=3e-3)
    assert _falls(losses), losses


# --- set prediction -------------------------------------------------------------------


def test_query_model_shapes():
    torch.manual_seed(0)
    net = QueryMaskModel(3, 5, queries=7, dim=16).eval()
    out = net(torch.randn(2, 3, 32, 24))
    assert out["semantic"].shape == (2, 5, 32, 24)
    assert out["pred_logits"].shape == (2, 7, 6)
    assert out["pred_masks"].shape == (2, 7, 32, 24)
    assert net.stride == 4 and net.receptive_field == 0


def test_set_loss_matching_equals_brute_force():
    torch.manual_seed(3)
    loss = SetPredictionLoss(num_classes=3, w_l1=1.0, w_iou=1.0)
    q, m = 5, 3
    outputs = {"pred_logits": torch.randn(1, q, 4), "pred_masks": 3 * torch.randn(1, q, 6, 6)}
    masks = (torch.rand(m, 6, 6) > 0.5).float()
    target = {"labels": torch.tensor([0, 2, 1]), "masks": masks}
    cost = loss.pairwise_cost(outputs["pred_logits"][0], outputs["pred_masks"][0], target)
    assert cost.shape == (q, m)
    best = min(itertools.permutations(range(q), m),
               key=lambda rows: float(sum(cost[r, j] for j, r in enumerate(rows))))
    [(rows, cols)] = loss.match(outputs, [target])
    assignment = dict(zip(cols.tolist(), rows.tolist()))
    assert [assignment[j] for j in range(m)] == list(best)


def test_masks_to_boxes_and_targets():
    labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]])
    [t] = semantic_targets(labels, 2)
    assert t["labels"].tolist() == [0, 1]
    assert masks_to_boxes(t["masks"]).tolist() == [[0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0]]


def test_query_model_trains_with_set_loss():
    torch.manual_seed(0)
    net = QueryMaskModel(3, K, queries=6, dim=16)
    criterion = SetPredictionLoss(num_classes=K)
    losses = _train(net, lambda out, y: criterion(out, semantic_targets(y, K)), steps=25, lr=1e-2)
    assert _falls(losses), losses
