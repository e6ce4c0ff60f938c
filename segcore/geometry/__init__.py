"""Tile geometry: windows, tile grids with halos, and stride padding.

``pad_to_multiple`` (torch) loads on first use, so the pure-numpy geometry imports
without torch (block tasks that never run a model stay light).
"""

from typing import Any

from segcore.geometry.grid import Tile, TileGrid
from segcore.geometry.window import Window

__all__ = ["Tile", "TileGrid", "Window", "pad_to_multiple"]


def __getattr__(name: str) -> Any:
    if name == "pad_to_multiple":
        from segcore.geometry.padding import pad_to_multiple

        return pad_to_multiple
    raise AttributeError(f"module 'segcore.geometry' has no attribute {name!r}")
