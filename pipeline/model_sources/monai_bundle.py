"""Placeholder: being written."""

from __future__ import annotations

from pathlib import Path

from segcore.errors import ModelError


class MonaiBundleSource:
    kind = "monai"

    def claims(self, path: Path) -> bool:
        return False

    def load(self, path: Path):
        raise ModelError(f"model '{path}': monai models are not supported yet")
