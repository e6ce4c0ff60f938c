"""The effective-halo probe: deterministic, never above the analytic halo, and it finds
a model's true reach."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segcore.errors import ConfigError
from segcore.models.unet import UNet3d
from segcore.receptive_field import halo_for
from segcore.receptive_field_effective import effective_halo


def _stack(reach: int) -> nn.Sequential:
    """Linear 2-D stack whose output depends on exactly ``reach`` pixels per side."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 1, 3, padding=1) for _ in range(reach)]
    return nn.Sequential(*layers).eval()


def test_unet3d_deterministic_and_at_most_analytic():
    torch.manual_seed(0)
    net = UNet3d(1, 3, base_channels=2, depth=2, instance_head=True).eval()
    analytic = halo_for(net.receptive_field, net.stride)
    first = effective_halo(net, 1, 3, stride=net.stride, max_halo=analytic)
    again = effective_halo(net, 1, 3, stride=net.stride, max_halo=analytic)
    assert first == again
    assert 0 <= first.halo <= analytic and first.halo % net.stride == 0
    # it stopped at the first ring whose change was within the tolerance (or at the end)
    assert all(d > first.tolerance for d in first.dependence[:-1])
    assert first.dependence[-1] <= first.tolerance or first.halo == analytic
    assert not net.training


def test_finds_the_reach_of_a_plain_stack():
    # a stack of 4 convolutions reaches 4 pixels: beyond that nothing changes (d == 0)
    found = effective_halo(_stack(4), 1, 2, stride=1, max_halo=12, tolerance=1e-6)
    assert found.halo <= 4
    assert found.dependence[-1] <= 1e-6


def test_a_model_that_ignores_context_needs_no_halo():
    pointwise = nn.Conv2d(2, 3, 1)
    found = effective_halo(pointwise, 2, 2, stride=1, max_halo=8)
    assert found.halo == 0 and len(found.dependence) == 1 and found.dependence[0] < 1e-6


def test_training_mode_is_restored():
    net = _stack(2).train()
    effective_halo(net, 1, 2, stride=1, max_halo=4)
    assert net.training


@pytest.mark.parametrize("kwargs, word", [
    ({"stride": 8, "max_halo": 12}, "max_halo"),
    ({"stride": 1, "max_halo": 4, "tolerance": 0.0}, "tolerance"),
    ({"stride": 0, "max_halo": 4}, "stride"),
])
def test_invalid_arguments_name_the_parameter(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        effective_halo(_stack(1), 1, 2, **kwargs)
