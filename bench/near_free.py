"""The near-free model of ``bench/machinery.py``: a 1x1 convolution as a TorchScript bundle.

On a GPU cluster the model is nearly free; this stand-in makes every pass other than the
model visible on a CPU machine. Defined in a file (TorchScript needs the source).
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from torch import nn

CLASSES = ["background", "vegetation", "water", "road", "building"]


class NearFree(nn.Module):
    """``(N, 3, H, W)`` -> ``(N, 5, H, W)`` logits of one 1x1 convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, len(CLASSES), kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def write_bundle(folder: Path) -> Path:
    """Write the bundle (seeded weights) into ``folder``; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = NearFree().eval()
    with torch.no_grad():  # classes follow brightness/greenness/blueness, as the scene does
        net.conv.weight.copy_(torch.tensor([[[[1.0]], [[1.0]], [[1.0]]],
                                            [[[-1.0]], [[2.0]], [[-1.0]]],
                                            [[[-1.0]], [[-1.0]], [[2.0]]],
                                            [[[0.5]], [[0.5]], [[0.5]]],
                                            [[[2.0]], [[-1.0]], [[-1.0]]]]))
        net.conv.bias.copy_(torch.tensor([0.0, 0.1, 0.1, 0.3, 0.2]))
    torch.jit.script(net).save(str(folder / "model.pt"))
    spec = {
        "name": "near-free", "format": "torchscript", "weights": "model.pt", "ndim": 2,
        "input": {"channels": 3, "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]},
        "classes": [{"id": i, "name": n, "isthing": False} for i, n in enumerate(CLASSES)],
        "heads": ["semantic"], "tile": 512, "receptive_field": 1,
    }
    (folder / "model.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder
