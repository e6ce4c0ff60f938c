"""A small query-based mask classifier (MaskFormer / DETR family).

A convolutional pixel decoder gives per-pixel embeddings; ``Q`` learned
queries attend (one cross-attention layer + MLP) to the stride-``S`` features
and each becomes a class distribution over ``K + 1`` labels (the last is "no
object") and a mask embedding whose dot product with the pixel embeddings
gives the mask logits. Training matches queries one-to-one to ground-truth
segments (:class:`segcore.losses.set_prediction.SetPredictionLoss`).

For the pipeline, ``forward`` also returns a per-pixel semantic score
(MaskFormer's semantic inference)::

    semantic[n, k, y, x] = sum_q softmax(pred_logits[n, q])[k] * sigmoid(pred_masks[n, q, y, x])

for the ``K`` real classes (the "no object" probability is dropped); its
argmax over ``k`` is the class map. The cross-attention is global, so the
model has no finite receptive field (``receptive_field = 0``, see
:mod:`segcore.models.vit`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from segcore.errors import ConfigError

__all__ = ["QueryMaskModel", "semantic_from_queries"]


def semantic_from_queries(pred_logits: torch.Tensor, pred_masks: torch.Tensor) -> torch.Tensor:
    """Per-pixel class scores ``(N, K, H, W)`` from ``(N, Q, K+1)`` and ``(N, Q, H, W)`` logits.

    Examples
    --------
    >>> logits = torch.tensor([[[10.0, 0.0, 0.0], [0.0, 10.0, 0.0]]])  # Q=2, K=2
    >>> masks = torch.tensor([[[[10.0, -10.0]], [[-10.0, 10.0]]]])      # H=1, W=2
    >>> semantic_from_queries(logits, masks).argmax(1).tolist()
    [[[0, 1]]]
    """
    probs = pred_logits.softmax(dim=-1)[..., :-1]
    return torch.einsum("nqk,nqhw->nkhw", probs, pred_masks.sigmoid())


def _cbr(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class QueryMaskModel(nn.Module):
    """Learned queries over a conv pixel decoder: set prediction of class + mask.

    Parameters
    ----------
    in_channels : int
        Input channels ``C``.
    num_classes : int
        Real classes ``K`` (a "no object" class ``K`` is added).
    queries : int, default 16
        Number of queries ``Q``.
    dim : int, default 32
        Width of pixel embeddings and queries (a multiple of ``heads``).
    heads : int, default 4
        Heads of the query-to-pixel cross-attention.
    stride : int, default 4
        Stride of the features the queries attend to, a power of two; ``H``
        and ``W`` must be multiples of it.

    Returns (forward)
    -----------------
    dict
        ``"semantic"`` ``(N, K, H, W)`` scores (module docstring),
        ``"pred_logits"`` ``(N, Q, K + 1)``, ``"pred_masks"`` ``(N, Q, H, W)``
        mask logits.

    Examples
    --------
    >>> net = QueryMaskModel(3, 5, queries=6, dim=16)
    >>> out = net(torch.zeros(2, 3, 32, 32))
    >>> [tuple(v.shape) for v in out.values()]
    [(2, 5, 32, 32), (2, 6, 6), (2, 6, 32, 32)]
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        queries: int = 16,
        dim: int = 32,
        heads: int = 4,
        stride: int = 4,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("queries", queries), ("dim", dim), ("heads", heads), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"QueryMaskModel {name}: expected an integer >= 1, received {value!r}")
        if stride & (stride - 1):
            raise ConfigError(f"QueryMaskModel stride: expected a power of two, received {stride}")
        if dim % heads:
            raise ConfigError(f"QueryMaskModel dim: expected a multiple of heads={heads}, received {dim}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_queries = queries
        self.stride = stride
        self.receptive_field = 0
        layers = _cbr(in_channels, dim)
        for _ in range(stride.bit_length() - 1):
            layers += _cbr(dim, dim, stride=2) + _cbr(dim, dim)
        self.encoder = nn.Sequential(*layers)
        self.pixel_decoder = nn.Sequential(
            nn.ConvTranspose2d(dim, dim, stride, stride=stride, bias=False),
            nn.BatchNorm2d(dim), nn.ReLU(inplace=True), nn.Conv2d(dim, dim, 3, padding=1),
        )
        self.query_embed = nn.Parameter(torch.randn(queries, dim) / math.sqrt(dim))
        self.cross_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.class_head = nn.Linear(dim, num_classes + 1)
        self.mask_head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(
                f"QueryMaskModel input: expected shape (N, {self.in_channels}, H, W), "
                f"received {tuple(x.shape)}"
            )
        if x.shape[2] % self.stride or x.shape[3] % self.stride:
            raise ConfigError(
                f"QueryMaskModel input: expected H and W to be multiples of the stride "
                f"{self.stride}, received H={x.shape[2]}, W={x.shape[3]}; pad with "
                f"segcore.geometry.pad_to_multiple first"
            )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"semantic", "pred_logits", "pred_masks"}`` (class docstring)."""
        self._check_input(x)
        features = self.encoder(x)
        pixels = self.pixel_decoder(features)  # (N, D, H, W)
        memory = features.flatten(2).transpose(1, 2)  # (N, h*w, D)
        q = self.query_embed.unsqueeze(0).expand(len(x), -1, -1)
        attended, _ = self.cross_attention(q, memory, memory, need_weights=False)
        q = self.norm1(q + attended)
        q = self.norm2(q + self.ffn(q))
        pred_logits = self.class_head(q)
        pred_masks = torch.einsum("nqd,ndhw->nqhw", self.mask_head(q), pixels)
        return {
            "semantic": semantic_from_queries(pred_logits, pred_masks),
            "pred_logits": pred_logits,
            "pred_masks": pred_masks,
        }
