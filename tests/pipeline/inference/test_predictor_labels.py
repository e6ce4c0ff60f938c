"""TilePredictor computes labels where the model runs: argmax, nodata and the centre
peaks on the model's device; class ids (and, for an instance head, the peaks and the
thing pixels' offsets) come back to the host, never the logits.

The reference is the plain formulation on host logits (``outputs()``: float heads,
numpy argmax, peaks of the numpy heatmap), which the results must equal bit for bit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.inference.predictor import TilePrediction, TilePredictor
from segcore.instances.grouping import find_centres
from segcore.synthetic.satellite import SatelliteSceneSpec, render


def _tiles(n: int = 3, shape: tuple[int, int] = (96, 88)) -> tuple[list, list]:
    """Synthetic satellite windows (buildings: instances) with nodata edges."""
    images = [render(SatelliteSceneSpec(seed=s, height=shape[0], width=shape[1], bands=3)).image
              for s in range(n)]
    valids = [np.ones(shape, dtype=bool) for _ in range(n)]
    valids[0][:, :8] = False
    valids[-1][-20:, :] = False
    return images, valids


def _reference(predictor: TilePredictor, images, valids, nodata: int) -> list[TilePrediction]:
    inputs = [predictor.normalise(im, va) for im, va in zip(images, valids)]
    out = []
    for heads, valid in zip(predictor.outputs(inputs), valids):
        dtype = np.uint16 if nodata > 255 else np.uint8
        semantic = heads["semantic"].argmax(axis=0).astype(dtype)
        semantic[~valid] = nodata
        if not predictor.has_instances:
            out.append(TilePrediction(semantic))
            continue
        grouping = predictor.bundle.spec.instances
        things = np.isin(semantic, predictor.thing_ids) & valid
        heat = torch.from_numpy(heads["center"][0])
        centres = find_centres(heat, threshold=grouping.threshold,
                               nms_kernel=grouping.nms_kernel).numpy()
        offsets = np.where(things[None], heads["offset"], np.float32(0))
        out.append(TilePrediction(semantic, centres, heat.numpy()[tuple(centres.T)], offsets))
    return out


@pytest.mark.parametrize("nodata", [255, 65535])
@pytest.mark.parametrize("which", ["semantic-only", "with-instances"])
def test_labels_equal_the_argmax_of_the_logits(which, nodata, tiny_bundle, demo_bundle):
    bundle = tiny_bundle if which == "semantic-only" else demo_bundle  # demo: buildings
    predictor = TilePredictor(bundle)
    images, valids = _tiles()
    got = predictor.predict(images, valids, nodata=nodata)
    want = _reference(predictor, images, valids, nodata)
    classes = bundle.spec.num_classes
    for g, w, valid in zip(got, want, valids):
        assert g.semantic.dtype == w.semantic.dtype == (np.uint16 if nodata > 255 else np.uint8)
        assert g.semantic.tobytes() == w.semantic.tobytes()
        assert (g.semantic[~valid] == nodata).all() and (g.semantic[valid] < classes).all()
        if predictor.has_instances:
            assert g.centres.dtype == np.int64 and g.offsets.dtype == np.float32
            np.testing.assert_array_equal(g.centres, w.centres)
            np.testing.assert_array_equal(g.scores, w.scores)
            np.testing.assert_array_equal(g.offsets, w.offsets)
            assert not g.offsets[:, ~np.isin(g.semantic, predictor.thing_ids)].any()
        else:
            assert g.centres is None and g.offsets is None and g.scores is None
    if predictor.has_instances:  # the check is not vacuous: peaks and things were found
        assert sum(len(g.centres) for g in got) > 0
        assert any(np.isin(g.semantic, predictor.thing_ids).any() for g in got)


def test_no_logits_come_back(demo_bundle):
    predictor = TilePredictor(demo_bundle)
    images, valids = _tiles(n=2)
    logits = predictor.outputs([predictor.normalise(im, va) for im, va in zip(images, valids)])
    for prediction, heads in zip(predictor.predict(images, valids, nodata=255), logits):
        fields = {f.name: getattr(prediction, f.name) for f in dataclasses.fields(prediction)}
        assert set(fields) == {"semantic", "centres", "scores", "offsets"}
        size = heads["semantic"].shape[1:]
        assert prediction.semantic.dtype.kind == "u" and prediction.semantic.shape == size
        assert prediction.offsets.shape == (2, *size)  # one vector a pixel, not k logits
        assert prediction.centres.shape == (len(prediction.scores), 2)
        # per pixel: 1 + 4 bytes of labels against 4 bytes per class of float logits
        assert sum(v.nbytes for v in fields.values()) < heads["semantic"].nbytes


@pytest.mark.parametrize("classes", [1, 2, 5, 16, 17, 40])
@pytest.mark.parametrize("kind", ["noise", "ties", "smooth"])
def test_cpu_class_argmax_equals_numpy_argmax(classes, kind):
    """The CPU kernel (a branch-free running maximum up to 16 classes, numpy's argmax
    above) gives numpy's argmax exactly: the first class on ties, 2-D and 3-D batches."""
    from pipeline.inference.predictor import _argmax_classes

    rng = np.random.default_rng(classes)
    for shape in [(3, classes, 64, 72), (2, classes, 9, 10, 11)]:
        if kind == "noise":
            logits = rng.standard_normal(shape).astype(np.float32)
        elif kind == "ties":  # a few values only: most pixels tie between several classes
            logits = rng.integers(-2, 2, shape).astype(np.float32)
        else:  # coherent regions, as a real model gives
            grids = np.meshgrid(*[np.linspace(0, 3, n) for n in shape[2:]], indexing="ij")
            logits = np.stack([np.sin(sum(g * (c + 1 + i) for i, g in enumerate(grids)))
                               for c in range(classes)]).astype(np.float32)
            logits = np.broadcast_to(logits, shape).copy()
        ids = _argmax_classes(torch.from_numpy(logits)).numpy()
        assert ids.shape == (shape[0], *shape[2:])
        np.testing.assert_array_equal(ids, np.argmax(logits, axis=1))
