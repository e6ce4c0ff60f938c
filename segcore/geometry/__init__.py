"""Tile geometry: windows, tile grids with halos, and stride padding."""

from segcore.geometry.grid import Tile, TileGrid
from segcore.geometry.padding import pad_to_multiple
from segcore.geometry.window import Window

__all__ = ["Tile", "TileGrid", "Window", "pad_to_multiple"]
