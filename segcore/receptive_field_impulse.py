"""Receptive field of a black-box model, measured by impulse responses.

:func:`segcore.receptive_field.measure` follows gradients, so it needs a torch
module. A model run by another engine (an ONNX file under onnxruntime) is only a
function ``(N, C, *S) -> (N, K, *S)``; its receptive field is measured here by
perturbing single input pixels and seeing which output pixels change.

The probe
---------
On a seeded standard-normal input of ``side`` pixels per axis, one pixel ``p`` near
the centre (all channels) is raised by ``amplitude``. An output pixel ``y`` changes
only if ``p`` lies in its input region ``[y - a, y + b]``, so the changed pixels
span ``[p - b, p + a]`` per axis, and the centred receptive field of
:mod:`segcore.receptive_field` is::

    R = 1 + 2 * max |y - p|   (over changed pixels y, axes, and probed p)

Networks with pooling see regions that depend on ``y`` modulo their stride, so
``phases`` pixels ``p + (k, k, ...)``, ``k < phases``, are probed (every phase of
strides dividing ``phases``). All probes and the unperturbed input run in one
batch. When the change reaches the input's border, the field is wider than
``side``: the next side in ``sides`` is tried, and after the last one the model is
reported as global (``0``). A perturbation a ReLU swallows everywhere would
under-measure, hence the random input and a large amplitude.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from segcore.errors import ConfigError

__all__ = ["impulse_receptive_field"]


def _reach(changed: np.ndarray, centre: tuple[int, ...]) -> tuple[int, bool]:
    """Largest per-axis distance of a changed pixel from ``centre``, and whether
    the change touches the border of the window."""
    where = np.nonzero(changed)
    if not where[0].size:
        return 0, False
    reach = max(int(np.abs(w - c).max()) for w, c in zip(where, centre))
    border = any(int(w.min()) == 0 or int(w.max()) == n - 1
                 for w, n in zip(where, changed.shape))
    return reach, border


def _probe(run: Callable[[np.ndarray], np.ndarray], channels: int, ndim: int, side: int,
           *, phases: int, amplitude: float, rtol: float,
           rng: np.random.Generator) -> tuple[int, bool]:
    base = rng.standard_normal((channels,) + (side,) * ndim).astype(np.float32)
    centres = [(side // 2 - phases // 2 + k,) * ndim for k in range(phases)]
    batch = np.repeat(base[None], phases + 1, axis=0)
    for i, centre in enumerate(centres, start=1):
        batch[(i, slice(None), *centre)] += np.float32(amplitude)
    out = np.asarray(run(batch), dtype=np.float64)
    if out.ndim != ndim + 2 or out.shape[0] != phases + 1 or out.shape[2:] != base.shape[1:]:
        raise ConfigError(f"run: expected a dense output of shape ({phases + 1}, K, "
                          f"{', '.join(map(str, base.shape[1:]))}), received {out.shape}")
    scale = max(float(np.abs(out).max()), 1e-30)
    reach, border = 0, False
    for i, centre in enumerate(centres, start=1):
        changed = (np.abs(out[i] - out[0]) > rtol * scale).any(axis=0)
        r, b = _reach(changed, centre)
        reach, border = max(reach, r), border or b
    return reach, border


def impulse_receptive_field(
    run: Callable[[np.ndarray], np.ndarray],
    channels: int,
    ndim: int,
    *,
    sides: Sequence[int] = (64, 128, 256),
    phases: int = 4,
    amplitude: float = 8.0,
    rtol: float = 1e-6,
    seed: int = 0,
) -> int:
    """Centred receptive field of ``run`` (module docstring), 0 when wider than
    the largest side (global).

    Parameters
    ----------
    run : callable
        The model: ``(N, C, *S)`` float32 -> ``(N, K, *S)``; called with
        ``N = phases + 1``.
    channels : int
        Input channels ``C``.
    ndim : int
        Spatial axes (2 or 3).
    sides : sequence of int, default (64, 128, 256)
        Window sides tried in turn (increasing).
    phases : int, default 4
        Probed pixels (diagonal offsets ``0 .. phases - 1`` from the centre).
    amplitude : float, default 8.0
        Added to every channel of a probed pixel (normalised units).
    rtol : float, default 1e-6
        An output changes when it moves by more than ``rtol * max |output|``.
    seed : int, default 0
        Seed of the input.

    Returns
    -------
    int
        Odd receptive field in pixels, or 0 (global or wider than ``max(sides)``).

    Raises
    ------
    ConfigError
        On invalid arguments or an output that is not dense.

    Examples
    --------
    >>> from scipy.ndimage import uniform_filter
    >>> box5 = lambda x: uniform_filter(x, size=(1, 1, 5, 5), mode="constant")
    >>> impulse_receptive_field(box5, 3, 2, sides=(32,))
    5
    >>> centred = lambda x: x - x.mean(axis=(1, 2, 3), keepdims=True)  # global
    >>> impulse_receptive_field(centred, 1, 2, sides=(32,))
    0
    """
    if ndim not in (2, 3):
        raise ConfigError(f"ndim: expected 2 or 3, received {ndim!r}")
    if channels < 1 or phases < 1 or not sides or min(sides) < 2 * phases + 2:
        raise ConfigError(f"channels, phases, sides: expected channels >= 1, phases >= 1 and "
                          f"sides >= 2 * phases + 2, received {channels}, {phases}, "
                          f"{list(sides)}")
    rng = np.random.default_rng(seed)
    for side in sides:
        reach, border = _probe(run, channels, ndim, int(side), phases=phases,
                               amplitude=amplitude, rtol=rtol, rng=rng)
        if not border:
            return 1 + 2 * reach
    return 0
