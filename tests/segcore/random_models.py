"""Test models shared by the tiling tests."""

from __future__ import annotations

import torch
from torch import nn

from segcore.models.unet import UNet2d


def content_sensitive_unet(seed: int, **params) -> UNet2d:
    """Eval-mode U-Net whose outputs depend strongly on content (not on biases).

    Kaiming weights keep the signal alive through every level and random
    BatchNorm statistics make the normalisation a non-trivial affine map, so
    a halo that is too small visibly changes the output.
    """
    torch.manual_seed(seed)
    model = UNet2d(3, 4, **{"base_channels": 4, "convs_per_level": 2, **params})
    return randomise(model, seed + 1)


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Kaiming conv weights, zero biases and random BatchNorm statistics (2-D or 3-D),
    then eval mode."""
    gen = torch.Generator().manual_seed(seed)
    convs = (nn.Conv2d, nn.ConvTranspose2d, nn.Conv3d, nn.ConvTranspose3d)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, convs):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=gen)
                if m.bias is not None:
                    m.bias.zero_()
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
    return model.eval()
