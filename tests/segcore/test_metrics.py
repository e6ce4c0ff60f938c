"""Confusion matrices that merge across tiles, and IoU/Dice equal to torchmetrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex
from torchmetrics.segmentation import DiceScore

from segcore.errors import ConfigError
from segcore.geometry import TileGrid
from segcore.metrics import SemanticScores, confusion_matrix

K = 5
NAMES = ["background", "building", "road", "water", "forest"]


@pytest.fixture
def labels() -> tuple[np.ndarray, np.ndarray]:
    """Truth in {0,1,2} + 255 ignore; prediction in {0..3}: class 3 only predicted,
    class 4 absent from both."""
    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, size=(3, 24, 24)).astype(np.uint8)
    target[rng.random(target.shape) < 0.1] = 255
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, 4, target.shape))
    pred = np.where(pred == 255, 0, pred).astype(np.int64)
    return pred, target


def test_confusion_matrix_by_hand() -> None:
    pred = np.array([[0, 1, 2], [2, 255, 1]])
    target = np.array([[0, 1, 1], [255, 2, 1]])
    cm = confusion_matrix(pred, target, 3)
    assert cm.dtype == np.int64
    assert cm.tolist() == [[1, 0, 0], [0, 2, 1], [0, 0, 0]]  # 255 truth and 255 pred left out
    valid = np.array([[True, False, True], [True, True, True]])
    assert confusion_matrix(pred, target, 3, valid=valid).tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    assert confusion_matrix(pred, np.where(target == 255, 0, target), 3, ignore_index=None).sum() == 5


def test_confusion_matrix_validation() -> None:
    with pytest.raises(ConfigError, match=r"target: expected class ids in \[0, 3\).*\[7, 9\]"):
        confusion_matrix(np.zeros(3, int), np.array([7, 9, 255]), 3)
    with pytest.raises(ConfigError, match="pred: expected the shape"):
        confusion_matrix(np.zeros(3, int), np.zeros(4, int), 3)
    with pytest.raises(ConfigError, match="integer array"):
        confusion_matrix(np.zeros(3), np.zeros(3, int), 3)
    with pytest.raises(ConfigError, match="num_classes"):
        confusion_matrix(np.zeros(3, int), np.zeros(3, int), 0)
    with pytest.raises(ConfigError, match="valid: expected the shape"):
        confusion_matrix(np.zeros(3, int), np.zeros(3, int), 2, valid=np.ones(2, bool))


def test_scores_match_torchmetrics(labels: tuple[np.ndarray, np.ndarray]) -> None:
    pred, target = labels
    scores = SemanticScores.from_confusion(confusion_matrix(pred, target, K), NAMES)
    p, t = torch.from_numpy(pred), torch.from_numpy(target.astype(np.int64))
    present = NAMES[:4]
    assert math.isnan(scores.per_class_iou["forest"]) and math.isnan(scores.per_class_dice["forest"])
    assert scores.per_class_iou["water"] == 0.0  # predicted only: present, IoU 0

    iou = MulticlassJaccardIndex(num_classes=K, average=None, ignore_index=255)(p, t)
    miou = MulticlassJaccardIndex(num_classes=K, average="macro", ignore_index=255)(p, t)
    for c, name in enumerate(present):
        assert scores.per_class_iou[name] == pytest.approx(iou[c].item(), abs=1e-6)
    assert iou[4].item() == 0.0  # torchmetrics' zero_division for the absent class
    assert scores.miou == pytest.approx(miou.item(), abs=1e-6)

    f1 = MulticlassF1Score(num_classes=K, average=None, ignore_index=255)(p, t)
    f1_macro = MulticlassF1Score(num_classes=K, average="macro", ignore_index=255)(p, t)
    for c, name in enumerate(present):
        assert scores.per_class_dice[name] == pytest.approx(f1[c].item(), abs=1e-6)
    assert scores.dice == pytest.approx(f1_macro.item(), abs=1e-6)

    keep = t != 255  # DiceScore has no ignore_index: give it the valid pixels
    dice_none = DiceScore(num_classes=K, average="none", input_format="index", aggregation_level="global")
    dice_macro = DiceScore(num_classes=K, average="macro", input_format="index", aggregation_level="global")
    per_class = dice_none(p[keep][None], t[keep][None]).flatten()
    assert math.isnan(per_class[4].item())
    for c, name in enumerate(present):
        assert scores.per_class_dice[name] == pytest.approx(per_class[c].item(), abs=1e-6)
    macro = dice_macro(p[keep][None], t[keep][None])
    assert scores.dice == pytest.approx(macro.item(), abs=1e-6)


def test_to_dict_is_json_safe(labels: tuple[np.ndarray, np.ndarray]) -> None:
    scores = SemanticScores.from_confusion(confusion_matrix(*labels, K), NAMES)
    d = scores.to_dict()
    json.dumps(d, allow_nan=False)
    assert set(d) == {"miou", "dice", "per_class"}
    assert d["per_class"]["forest"] == {"iou": None, "dice": None}
    assert d["miou"] == pytest.approx(scores.miou)


def test_all_classes_absent_gives_nan_means() -> None:
    scores = SemanticScores.from_confusion(np.zeros((2, 2), np.int64), ["a", "b"])
    assert math.isnan(scores.miou) and math.isnan(scores.dice)
    assert scores.to_dict()["miou"] is None


def test_from_confusion_validation() -> None:
    with pytest.raises(ConfigError, match="cm: expected a square"):
        SemanticScores.from_confusion(np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(ConfigError, match="distinct"):
        SemanticScores.from_confusion(np.zeros((2, 2)), ["a", "a"])


@settings(max_examples=50, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 30), st.integers(1, 30)),
    tile=st.integers(1, 12),
    seed=st.integers(0, 2**31 - 1),
)
def test_tile_matrices_sum_to_the_whole(shape: tuple[int, int], tile: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 4, size=shape)
    target[rng.random(shape) < 0.2] = 255
    pred = rng.integers(0, 5, size=shape)  # 4 is out of range: left out
    valid = rng.random(shape) < 0.9
    whole = confusion_matrix(pred, target, 4, valid=valid)
    total = np.zeros((4, 4), np.int64)
    for t in TileGrid.create(shape, tile=tile):
        s = t.core.slices
        total += confusion_matrix(pred[s], target[s], 4, valid=valid[s])
    assert np.array_equal(total, whole)
