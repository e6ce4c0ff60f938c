"""Open-vocabulary segmentation: pixels take the prompt of highest cosine similarity.

An image encoder maps every pixel to a feature ``f``; a text encoder maps any
prompt ``c`` to ``t_c`` in the same space; a pixel's label is
``argmax_c f . t_c / (||f|| ||t_c||)`` (the argmax of cosine similarity between
the pixel feature and each prompt embedding). The encoders are pluggable
(:class:`TextEncoder`); no pretrained weights are downloaded, so the built-in
:class:`HashedBagOfWords` is a small learned compositional encoder: a prompt is
the mean of its words, a word the mean of hashed vectors of the word and its
character trigrams. A prompt never seen in training but built from seen words
("blue striped" after "blue smooth" and "red striped") gets a meaningful
embedding, which makes zero-shot segmentation of such combinations possible.

:func:`attribute_scene` renders the matching synthetic data: regions of colour x
texture attributes ("red striped", "green dotted", ...).
"""

from __future__ import annotations

import zlib
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from segcore.errors import ConfigError

__all__ = [
    "COLOURS",
    "TEXTURES",
    "HashedBagOfWords",
    "OpenVocabSegmenter",
    "TextEncoder",
    "assign",
    "attribute_prompts",
    "attribute_scene",
    "cosine_logits",
]


def _check_assign(pixel_features: torch.Tensor, text_embeddings: torch.Tensor) -> None:
    if pixel_features.ndim < 2 or text_embeddings.ndim != 2:
        raise ConfigError(
            "assign: expected pixel_features (C, *spatial) and text_embeddings (K, C), "
            f"received {tuple(pixel_features.shape)} and {tuple(text_embeddings.shape)}"
        )
    if pixel_features.shape[0] != text_embeddings.shape[1] or text_embeddings.shape[0] < 1:
        raise ConfigError(
            f"assign: feature widths differ or no prompts: pixel_features has C="
            f"{pixel_features.shape[0]}, text_embeddings is {tuple(text_embeddings.shape)}"
        )


def cosine_logits(pixel_features: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every pixel with every prompt.

    Parameters
    ----------
    pixel_features : (N, C, *spatial) Tensor
    text_embeddings : (K, C) Tensor

    Returns
    -------
    (N, K, *spatial) Tensor
        Values in [-1, 1]; zero-norm vectors give 0.
    """
    f = F.normalize(pixel_features, dim=1, eps=1e-12)
    t = F.normalize(text_embeddings.to(f.dtype), dim=1, eps=1e-12)
    return torch.einsum("nc...,kc->nk...", f, t)


def assign(pixel_features: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """Label each pixel with the prompt of highest cosine similarity.

    Parameters
    ----------
    pixel_features : (C, *spatial) Tensor of float
        One feature vector per pixel (2-D, 3-D or any spatial rank).
    text_embeddings : (K, C) Tensor of float
        One embedding per prompt.

    Returns
    -------
    (*spatial) Tensor of int64
        Prompt index in ``0..K-1``; ties go to the lowest index.

    Raises
    ------
    ConfigError
        If the shapes do not match ``(C, *spatial)`` and ``(K, C)``.

    Examples
    --------
    >>> feats = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]])   # C=2, H=1, W=2
    >>> texts = torch.tensor([[3.0, 0.0], [0.0, 0.5]])      # K=2
    >>> assign(feats, texts).tolist()
    [[0, 1]]
    """
    _check_assign(pixel_features, text_embeddings)
    return cosine_logits(pixel_features[None], text_embeddings)[0].argmax(dim=0)


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that embeds prompts: ``encode(prompts) -> (K, C)``."""

    dim: int

    def encode(self, prompts: list[str]) -> torch.Tensor: ...


def _stable_hash(text: str, buckets: int) -> int:
    # crc32, not hash(): Python salts str hashes per process
    return zlib.crc32(text.encode("utf-8")) % buckets


def _word_features(word: str, buckets: int) -> list[int]:
    padded = f"<{word}>"
    grams = [padded[i : i + 3] for i in range(max(1, len(padded) - 2))]
    return [_stable_hash("w:" + word, buckets)] + [_stable_hash("g:" + g, buckets) for g in grams]


def _tokens(prompt: str) -> list[str]:
    words = [w for w in "".join(ch if ch.isalnum() else " " for ch in prompt.lower()).split()]
    if not words:
        raise ConfigError(f"prompt {prompt!r} has no words (letters or digits)")
    return words


class HashedBagOfWords(nn.Module):
    """Compositional text encoder: hashed word + character-trigram vectors, averaged.

    ``t(prompt) = mean over words w of mean(v[h(w)], v[h(trigram)] for its trigrams)``.
    Deterministic for any prompt (stable hashing, no vocabulary), linear in its word
    vectors, so an unseen prompt made of seen words lands between them.

    Parameters
    ----------
    dim : int
        Embedding width ``C``.
    buckets : int
        Hash buckets (rows of the learned table).

    Examples
    --------
    >>> enc = HashedBagOfWords(dim=8, buckets=64)
    >>> enc.encode(["blue striped", "a new prompt"]).shape
    torch.Size([2, 8])
    """

    def __init__(self, dim: int = 32, buckets: int = 2048) -> None:
        super().__init__()
        self.dim, self.buckets = int(dim), int(buckets)
        self.table = nn.Embedding(self.buckets, self.dim)
        nn.init.normal_(self.table.weight, std=1.0)

    def token_ids(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(K, W, G)`` bucket ids and their ``(K, W, G)`` float weights (0 = padding)."""
        if not prompts:
            raise ConfigError("prompts: expected at least one prompt")
        feats = [[_word_features(w, self.buckets) for w in _tokens(p)] for p in prompts]
        n_words = max(len(f) for f in feats)
        n_grams = max(len(g) for f in feats for g in f)
        ids = torch.zeros(len(prompts), n_words, n_grams, dtype=torch.long)
        weights = torch.zeros(len(prompts), n_words, n_grams)
        for k, words in enumerate(feats):
            for j, grams in enumerate(words):
                ids[k, j, : len(grams)] = torch.tensor(grams)
                weights[k, j, : len(grams)] = 1.0 / (len(grams) * len(words))
        return ids, weights

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """``(K, C)`` prompt embeddings (differentiable w.r.t. the table)."""
        ids, weights = self.token_ids(prompts)
        ids, weights = ids.to(self.table.weight.device), weights.to(self.table.weight.device)
        return (self.table(ids) * weights[..., None]).sum(dim=(1, 2))


def _block(c_in: int, c_out: int, dilation: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation),
        nn.GroupNorm(1, c_out), nn.GELU(),
    )


class OpenVocabSegmenter(nn.Module):
    """Small conv pixel encoder + text encoder; logits are per-prompt cosine similarities.

    ``forward(x)`` returns ``(N, K, H, W)`` logits ``scale * cos(f_ij, t_k)`` for the
    prompts of :meth:`set_prompts` (their embeddings are a non-persistent buffer,
    refreshed after ``load_state_dict``), so a pipeline sees ordinary class logits
    and argmax gives :func:`assign`'s labels.

    Parameters
    ----------
    in_channels : int
    dim : int
        Joint embedding width ``C``.
    width : int
        Channels of the pixel encoder.
    buckets : int
        Hash buckets of the built-in :class:`HashedBagOfWords`.
    scale : float
        Logit scale (1 / temperature).
    prompts : list of str, optional
        Initial prompt set.
    text_encoder : TextEncoder, optional
        Replaces the built-in encoder (e.g. a frozen CLIP text tower).
    """

    stride = 1
    receptive_field = 31  # 3x3 convs with dilations 1, 2, 4, 8 (+1x1): 1 + 2 * 15

    def __init__(self, in_channels: int = 3, dim: int = 32, width: int = 32, buckets: int = 2048,
                 scale: float = 10.0, prompts: list[str] | None = None,
                 text_encoder: TextEncoder | None = None) -> None:
        super().__init__()
        self.pixel_encoder = nn.Sequential(
            _block(in_channels, width, 1), _block(width, width, 2),
            _block(width, width, 4), _block(width, width, 8), nn.Conv2d(width, dim, 1),
        )
        self.text_encoder = (text_encoder if text_encoder is not None
                             else HashedBagOfWords(dim, buckets))
        if self.text_encoder.dim != dim:
            raise ConfigError(f"text_encoder.dim {self.text_encoder.dim} != dim {dim}")
        self.scale = float(scale)
        self.prompts: list[str] = []
        self.register_buffer("text_embeddings", torch.zeros(0, dim), persistent=False)
        self.register_load_state_dict_post_hook(lambda module, _keys: module._refresh())
        if prompts:
            self.set_prompts(prompts)

    def set_prompts(self, prompts: list[str]) -> None:
        """Embed ``prompts`` once and keep them for :meth:`forward`."""
        self.prompts = list(prompts)
        with torch.no_grad():
            emb = self.text_encoder.encode(self.prompts).detach()
        self.text_embeddings = F.normalize(emb.float(), dim=1).to(self.text_embeddings.device)

    def _refresh(self) -> None:
        if self.prompts:
            self.set_prompts(self.prompts)

    def pixel_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` unit-norm pixel features."""
        return F.normalize(self.pixel_encoder(x), dim=1)

    def logits(self, x: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """``(N, K, H, W)`` scaled cosine logits against given (trainable) embeddings."""
        return self.scale * cosine_logits(self.pixel_encoder(x), text_embeddings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.text_embeddings.shape[0] == 0:
            raise ConfigError("OpenVocabSegmenter: call set_prompts(...) before forward")
        return self.logits(x, self.text_embeddings)


# --- synthetic attribute scenes ------------------------------------------------------------

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.2, 0.2), "green": (0.2, 0.75, 0.25), "blue": (0.2, 0.3, 0.9),
}
TEXTURES = ("smooth", "striped", "dotted")


def attribute_prompts() -> list[str]:
    """All ``"<colour> <texture>"`` prompts, colour-major (9 of them)."""
    return [f"{c} {t}" for c in COLOURS for t in TEXTURES]


def _texture(name: str, ys: NDArray, xs: NDArray, rng: np.random.Generator) -> NDArray:
    period = rng.uniform(5.0, 8.0)
    if name == "smooth":
        return np.full(ys.shape, 0.75, dtype=np.float32)
    if name == "striped":
        angle = rng.uniform(0, np.pi)
        phase = (np.cos(angle) * xs + np.sin(angle) * ys) / period
        return np.where((phase % 1.0) < 0.5, 1.0, 0.35).astype(np.float32)
    if name == "dotted":
        dy, dx = (ys % period) - period / 2, (xs % period) - period / 2
        return np.where(dy**2 + dx**2 < (period / 3.2) ** 2, 0.3, 1.0).astype(np.float32)
    raise ConfigError(f"texture: expected one of {TEXTURES}, received {name!r}")


def attribute_scene(seed: int, size: int, prompts: list[str], *, cells: int = 12,
                    noise: float = 0.04) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """A ``size`` x ``size`` scene of Voronoi regions, each one ``"<colour> <texture>"``.

    Parameters
    ----------
    seed : int
    size : int
        Side in pixels.
    prompts : list of str
        The region kinds drawn from (uniformly per region), e.g. a subset of
        :func:`attribute_prompts`; the labels index this list.
    cells : int
        Number of Voronoi regions.
    noise : float
        Per-pixel Gaussian noise (reflectance units).

    Returns
    -------
    image : (3, size, size) ndarray of uint8
    labels : (size, size) ndarray of int64
        Index into ``prompts``.

    Examples
    --------
    >>> img, lab = attribute_scene(0, 32, ["red smooth", "blue dotted"], cells=4)
    >>> img.shape, img.dtype.name, set(lab.ravel().tolist()) <= {0, 1}
    ((3, 32, 32), 'uint8', True)
    """
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    centres = rng.uniform(0, size, size=(cells, 2)).astype(np.float32)
    dist = (ys[None] - centres[:, 0, None, None]) ** 2 + (xs[None] - centres[:, 1, None, None]) ** 2
    region = dist.argmin(axis=0)
    kinds = rng.integers(0, len(prompts), size=cells)
    image = np.zeros((3, size, size), dtype=np.float32)
    for r in range(cells):
        colour, texture = prompts[int(kinds[r])].split()
        mask = region == r
        pattern = _texture(texture, ys, xs, rng)
        jitter = rng.uniform(-0.06, 0.06, size=3)
        for b in range(3):
            image[b][mask] = ((COLOURS[colour][b] + jitter[b]) * pattern)[mask]
    image += rng.normal(0, noise, size=image.shape).astype(np.float32)
    pixels = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return pixels, kinds[region].astype(np.int64)
