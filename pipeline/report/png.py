"""RGB PNG files written with one filter for every row and zlib's run-length strategy.

Pillow chooses a filter for every row of a PNG by trying each of the five (adaptive
filtering) and compresses with deflate's general match search; together they took most
of a quicklook's time: 160-230 ms of CPU for a 1024² RGB image of noise-like imagery
at compression level 1. :func:`write_rgb_png` filters every row with Sub (each byte
minus the same band's byte one pixel to the left, in numpy) and deflates with zlib's
``Z_RLE`` strategy (matches of the previous byte only: runs of one colour, which is
what Sub leaves of flat areas and overlays): 40-60 ms, for files about the size of
Pillow's (1024² quicklooks of the bench scene: 2662 against 2672 KB for the image, 2388
against 2455 KB for the overlay; a photograph 9 % larger, 1488 against 1366 KB). Any PNG
decoder reads them (Pillow in the tests).
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

__all__ = ["write_rgb_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SUB = 1  # PNG filter type


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _deflate(data: np.ndarray) -> bytes:
    """A zlib stream of ``data``: run-length matches only, largest memory level."""
    stream = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    return stream.compress(data) + stream.flush()


def write_rgb_png(path: str | os.PathLike[str], rgb: np.ndarray) -> None:
    """Write ``rgb`` ``(H, W, 3)`` uint8 as an 8-bit RGB PNG at ``path``.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 13
    >>> path = tempfile.mkdtemp() + "/a.png"
    >>> write_rgb_png(path, image)
    >>> bool((np.asarray(Image.open(path)) == image).all())
    True
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape[:2]:
        raise ValueError(f"rgb: expected a non-empty (H, W, 3) uint8 array, got "
                         f"{rgb.dtype}{rgb.shape}")
    height, width = rgb.shape[:2]
    rows = rgb.reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), np.uint8)
    filtered[:, 0] = _SUB
    filtered[:, 1:4] = rows[:, :3]
    np.subtract(rows[:, 3:], rows[:, :-3], out=filtered[:, 4:])  # modulo 256, as PNG wants
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, no interlace
    data = (_SIGNATURE + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", _deflate(filtered)) + _chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(data)
