"""TilePredictor computes labels where the model runs: argmax, nodata and instance
grouping on the model's device, only integer labels come back to the host.

The reference is the plain formulation on host logits (``outputs()``: float heads,
numpy argmax, grouping of numpy heads), which the labels must equal bit for bit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.inference.predictor import TilePrediction, TilePredictor
from segcore.instances.grouping import group_instances
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
        instance = None
        if predictor.has_instances:
            grouping = predictor.bundle.spec.instances
            things = np.isin(semantic, predictor.thing_ids) & valid
            instance = group_instances(heads["center"], heads["offset"], things,
                                       threshold=grouping.threshold,
                                       nms_kernel=grouping.nms_kernel,
                                       top_k=grouping.top_k).numpy()
        out.append(TilePrediction(semantic, instance))
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
            assert g.instance.dtype == np.int32
            np.testing.assert_array_equal(g.instance, w.instance)
        else:
            assert g.instance is None and w.instance is None
    if predictor.has_instances:  # the check is not vacuous: instances were found
        assert max(int(g.instance.max()) for g in got) > 0


def test_only_integer_labels_come_back_not_logits(demo_bundle):
    predictor = TilePredictor(demo_bundle)
    images, valids = _tiles(n=2)
    logits = predictor.outputs([predictor.normalise(im, va) for im, va in zip(images, valids)])
    for prediction, heads in zip(predictor.predict(images, valids, nodata=255), logits):
        fields = {f.name: getattr(prediction, f.name) for f in dataclasses.fields(prediction)}
        assert set(fields) == {"semantic", "instance"}
        for name, value in fields.items():
            assert isinstance(value, np.ndarray) and value.dtype.kind in "iu", name
            assert value.shape == heads["semantic"].shape[1:], name  # one value a pixel
        # per pixel: 1 + 4 bytes of labels against 4 bytes per class of float logits
        assert sum(v.nbytes for v in fields.values()) < heads["semantic"].nbytes
