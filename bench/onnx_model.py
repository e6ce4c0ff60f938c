"""Tiles per second of one model as an ONNX file (onnxruntime) and as TorchScript (torch).

The same two-layer convolution (3 -> 16 -> 4 channels, 3x3, ReLU between) with the same
weights is written both ways and run by :class:`pipeline.inference.predictor.TilePredictor`
on the same uint8 windows; the labels must be equal (printed) and the rates are printed
with their ratio. Run: ``python bench/onnx_model.py [--tile 512] [--tiles 16] [--threads 2]``.
Under CPU contention compare the ratio, not the rates.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from pipeline.bundle import InputSpec, ModelFormat, ModelSpec, load_bundle, write_spec
from pipeline.inference.predictor import TilePredictor
from pipeline.prompts import prompt_classes


def _weights(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(16, 3, 3, 3)).astype(np.float32) * 0.3,
            rng.normal(size=16).astype(np.float32) * 0.1,
            rng.normal(size=(4, 16, 3, 3)).astype(np.float32) * 0.3,
            rng.normal(size=4).astype(np.float32) * 0.1]


def _onnx(path: Path, w: list[np.ndarray]) -> Path:
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["h"], pads=[1] * 4),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "W2", "B2"], ["y"], pads=[1] * 4)]
    graph = helper.make_graph(
        nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, "h", "w"])],
        [numpy_helper.from_array(a, n) for a, n in zip(w, ["W1", "B1", "W2", "B2"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.metadata_props.add(key="tiles_overlap", value="0")
    onnx.save(model, str(path))
    return path


def _torchscript(directory: Path, w: list[np.ndarray]) -> Path:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 4, 3, padding=1)).eval()
    with torch.no_grad():
        for p, a in zip(net.parameters(), w):
            p.copy_(torch.from_numpy(a))
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 32, 32)), str(directory / "net.pt"))
    spec = ModelSpec(name="bench-ts", format=ModelFormat.TORCHSCRIPT, weights="net.pt",
                     input=InputSpec(channels=3, mean=[0.0] * 3, std=[1.0] * 3,
                                     value_scale={"uint8": 1 / 255}),
                     classes=prompt_classes([f"class_{i}" for i in range(4)]),
                     receptive_field=5)
    write_spec(directory, spec)
    return directory


def _rate(predictor: TilePredictor, images: list[np.ndarray], repeats: int) -> tuple[float, list]:
    valids = [np.ones(im.shape[1:], bool) for im in images]
    labels = predictor.predict(images[:2], valids[:2], nodata=255)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        labels = predictor.predict(images, valids, nodata=255)
    return repeats * len(images) / (time.perf_counter() - start), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--tiles", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    w = _weights()
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (3, args.tile, args.tile), dtype=np.uint8)
              for _ in range(args.tiles)]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_bundle = load_bundle(_onnx(Path(tmp) / "bench.onnx", w))
        ts_bundle = load_bundle(_torchscript(Path(tmp), w))
        onnx_rate, onnx_labels = _rate(TilePredictor(onnx_bundle), images, args.repeats)
        ts_rate, ts_labels = _rate(TilePredictor(ts_bundle), images, args.repeats)
    same = np.mean([(a.semantic == b.semantic).mean() for a, b in zip(onnx_labels, ts_labels)])
    print(f"{args.tiles} tiles of {args.tile}^2 px x {args.repeats}, {args.threads} threads")
    print(f"onnxruntime  {onnx_rate:8.2f} tiles/s")
    print(f"torchscript  {ts_rate:8.2f} tiles/s")
    print(f"ratio onnx/torchscript {onnx_rate / ts_rate:.2f}; labels equal on {same:.6%}")


if __name__ == "__main__":
    main()
