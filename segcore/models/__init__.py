"""Segmentation models and the architecture factory."""

from segcore.models.factory import ARCHITECTURES, build_model
from segcore.models.unet import UNet2d

__all__ = ["ARCHITECTURES", "UNet2d", "build_model"]
