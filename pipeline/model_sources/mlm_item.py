"""Placeholder: being written."""

from __future__ import annotations

from pathlib import Path

from segcore.errors import ModelError


class MlmItemSource:
    kind = "mlm"

    def claims(self, path: Path) -> bool:
        return False

    def load(self, path: Path):
        raise ModelError(f"model '{path}': mlm models are not supported yet")
