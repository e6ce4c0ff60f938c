"""A small Vision Transformer segmenter with inspectable attention.

The image is cut into ``patch x patch`` patches, each embedded linearly; a
learned class token is prepended and 2-D sine-cosine positional embeddings
(computed for any grid size, so any ``H, W`` that are multiples of the patch
work) are added. A pre-norm transformer encoder, whose attention is written
out here so that its weights can be returned, is followed by a linear decoder
mapping every patch embedding to class logits, bilinearly up-sampled to pixels.

Attention is global: every output pixel depends on the whole window, so the
model has no finite receptive field and tiled inference is not exactly equal
to untiled inference. ``receptive_field`` is ``0`` to say "global"; in a model
bundle leave ``receptive_field`` unset (``None``) and the pipeline uses its
default halo (a quarter of the tile) or the bundle's ``overlap``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segcore.errors import ConfigError

__all__ = ["ViTSegmenter", "attention_error_correlation", "sincos_position_embedding"]


def sincos_position_embedding(h: int, w: int, dim: int) -> torch.Tensor:
    """2-D sine-cosine positional embeddings, ``(h * w, dim)`` float32, row-major.

    Half of the channels encode the row, half the column, each with
    ``dim // 4`` frequencies (MAE / ViT convention). ``dim`` must be a
    multiple of 4.

    Examples
    --------
    >>> sincos_position_embedding(2, 3, 8).shape
    torch.Size([6, 8])
    """
    if dim % 4:
        raise ConfigError(f"dim: expected a multiple of 4 for 2-D sin-cos embeddings, received {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    parts = []
    for coord in (ys.flatten(), xs.flatten()):
        angles = coord[:, None] * omega[None, :]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)).softmax(dim=-1)
        y = (weights @ v).transpose(1, 2).reshape(n, t, d)
        return self.out(y), weights  # weights: (N, heads, T, T)


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, weights = self.attn(self.norm1(x))
        x = x + y
        return x + self.mlp(self.norm2(x)), weights


class ViTSegmenter(nn.Module):
    """ViT with a linear per-patch decoder, ``(N, C, H, W) -> (N, K, H, W)`` logits.

    Parameters
    ----------
    in_channels : int
        Input channels ``C``.
    num_classes : int
        Output classes ``K``.
    patch : int, default 8
        Patch side; ``H`` and ``W`` must be multiples of it (it is the ``stride``).
    dim : int, default 64
        Embedding width, a multiple of 4 and of ``heads``.
    depth : int, default 2
        Transformer blocks.
    heads : int, default 4
        Attention heads.
    max_patches : int, default 4096
        Largest number of patches per image accepted (attention memory grows
        with its square); 4096 is a 512 x 512 window at patch 8.

    Attributes
    ----------
    stride : int
        ``patch``.
    receptive_field : int
        ``0``: global (see the module docstring; bundles leave it unset so the
        pipeline uses its default halo).

    Examples
    --------
    >>> net = ViTSegmenter(3, 5, patch=8, dim=32, depth=1, heads=2)
    >>> net(torch.zeros(2, 3, 32, 48)).shape
    torch.Size([2, 5, 32, 48])
    >>> net.attention_maps(torch.zeros(2, 3, 32, 48)).shape
    torch.Size([2, 2, 4, 6])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        patch: int = 8,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        max_patches: int = 4096,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("patch", patch), ("dim", dim), ("depth", depth), ("heads", heads),
                            ("max_patches", max_patches)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ViTSegmenter {name}: expected an integer >= 1, received {value!r}")
        if dim % 4 or dim % heads:
            raise ConfigError(
                f"ViTSegmenter dim: expected a multiple of 4 and of heads={heads}, received {dim}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.patch = patch
        self.stride = patch
        self.dim = dim
        self.heads = heads
        self.max_patches = max_patches
        self.receptive_field = 0
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList([_Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.decoder = nn.Linear(dim, num_classes)

    def _check_input(self, x: torch.Tensor) -> tuple[int, int]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(
                f"ViTSegmenter input: expected shape (N, {self.in_channels}, H, W), "
                f"received {tuple(x.shape)}"
            )
        if x.shape[2] % self.patch or x.shape[3] % self.patch:
            raise ConfigError(
                f"ViTSegmenter input: expected H and W to be multiples of the patch {self.patch}, "
                f"received H={x.shape[2]}, W={x.shape[3]}; pad with "
                f"segcore.geometry.pad_to_multiple first"
            )
        h, w = x.shape[2] // self.patch, x.shape[3] // self.patch
        if h * w > self.max_patches:
            raise ConfigError(
                f"ViTSegmenter input: {h * w} patches exceed max_patches={self.max_patches}; "
                f"use smaller tiles"
            )
        return h, w

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], tuple[int, int]]:
        """Tokens ``(N, 1 + h*w, dim)`` after the encoder, per-block attention
        weights ``[(N, heads, 1 + h*w, 1 + h*w)]`` and the grid ``(h, w)``."""
        h, w = self._check_input(x)
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = tokens + sincos_position_embedding(h, w, self.dim).to(tokens)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1).to(tokens), tokens], dim=1)
        weights = []
        for block in self.blocks:
            tokens, attn = block(tokens)
            weights.append(attn)
        return self.norm(tokens), weights, (h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K, H, W)``: per-patch linear decoder, bilinear up-sampling."""
        tokens, _, (h, w) = self.encode(x)
        logits = self.decoder(tokens[:, 1:]).transpose(1, 2).reshape(len(x), self.num_classes, h, w)
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Class-token attention to the patches in the last block, ``(N, heads, h, w)``.

        The class token's attention row (which also covers the class token
        itself) is restricted to the patches and renormalised, so every map
        sums to 1 over the patches.
        """
        _, weights, (h, w) = self.encode(x)
        to_patches = weights[-1][:, :, 0, 1:]
        to_patches = to_patches / to_patches.sum(dim=-1, keepdim=True)
        return to_patches.reshape(len(x), self.heads, h, w)


def attention_error_correlation(attention: object, per_patch_error: object) -> float:
    """Pearson correlation between an attention map and the per-patch error.

    A positive value means the model attends where it is wrong (or unsure).

    Parameters
    ----------
    attention : (h, w) array-like
        One attention map (e.g. ``attention_maps(x)[n, head]`` or the mean
        over heads).
    per_patch_error : (h, w) array-like
        Error per patch, e.g. the fraction of misclassified pixels or the mean
        loss in each patch.

    Returns
    -------
    float
        Pearson's r in ``[-1, 1]``; ``nan`` if either map is constant.

    Raises
    ------
    ConfigError
        If the shapes differ or hold fewer than 2 values.

    Examples
    --------
    >>> round(attention_error_correlation([[0.1, 0.2], [0.3, 0.4]], [[1, 2], [3, 4]]), 6)
    1.0
    >>> round(attention_error_correlation([[0.1, 0.2], [0.3, 0.4]], [[4, 3], [2, 1]]), 6)
    -1.0
    """
    a = np.asarray(attention.detach().cpu() if isinstance(attention, torch.Tensor) else attention,
                   dtype=np.float64)
    e = np.asarray(per_patch_error.detach().cpu() if isinstance(per_patch_error, torch.Tensor)
                   else per_patch_error, dtype=np.float64)
    if a.shape != e.shape or a.size < 2:
        raise ConfigError(
            f"attention, per_patch_error: expected equal shapes with >= 2 values, "
            f"received {a.shape} and {e.shape}"
        )
    a, e = a.ravel() - a.mean(), e.ravel() - e.mean()
    denom = math.sqrt(float(a @ a) * float(e @ e))
    if denom == 0.0:
        return float("nan")
    return float(np.clip(float(a @ e) / denom, -1.0, 1.0))
