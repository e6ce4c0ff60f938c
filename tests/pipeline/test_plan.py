"""The tile planner: windows by cost within a memory budget, explicit --tile, halo modes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.bundle import load_bundle
from pipeline.options import HaloMode, RunOptions, load_run_options
from pipeline.run.plan import halo_mode_of, plan_tiles
from pipeline.run.window_cost import axis_windows, choose_tile, window_pixels
from pipeline.run.window_memory import forward_peak_bytes, window_memory
from segcore.errors import ConfigError

MEDICAL = load_bundle("demo-medical")
SATELLITE = load_bundle("demo-satellite")


# --- pure cost arithmetic ------------------------------------------------------------


def test_one_window_for_a_volume_within_budget():
    choice = choose_tile((96, 112, 80), halo=24, stride=8, workers=1, max_window=10**7)
    assert choice.tile == (96, 112, 80) and choice.windows == 1


def test_several_windows_for_a_small_budget_each_within_it():
    shape, budget = (256, 256, 256), 3 * 10**6
    choice = choose_tile(shape, halo=24, stride=8, workers=1, max_window=budget)
    assert choice.windows > 1
    assert choice.largest == window_pixels(shape, choice.tile, 24, 8) <= budget


def test_split_for_parallel_workers_along_the_first_axis():
    choice = choose_tile((160, 160, 160), halo=24, stride=8, workers=2, max_window=10**8)
    assert choice.tile == (80, 160, 160) and choice.windows == 2


def test_nothing_fits_gives_the_smallest_windows():
    choice = choose_tile((64, 64, 64), halo=16, stride=8, workers=1, max_window=10)
    assert choice.tile == (8, 8, 8)


@settings(max_examples=60, deadline=None)
@given(shape=st.tuples(*[st.integers(1, 300)] * 3), stride=st.sampled_from([1, 4, 8, 16]),
       halo_steps=st.integers(0, 6), workers=st.integers(1, 8),
       budget=st.integers(1, 10**7))
def test_choice_is_a_valid_grid_within_budget(shape, stride, halo_steps, workers, budget):
    halo = halo_steps * stride
    choice = choose_tile(shape, halo=halo, stride=stride, workers=workers, max_window=budget)
    for t, n in zip(choice.tile, shape):
        assert 1 <= t <= n and (t % stride == 0 or t == n)
    assert choice.windows == math.prod(-(-n // t) for n, t in zip(shape, choice.tile))
    assert choice.largest == window_pixels(shape, choice.tile, halo, stride)
    smallest = window_pixels(shape, tuple(min(n, stride) for n in shape), halo, stride)
    assert choice.largest <= max(budget, smallest)


@given(length=st.integers(1, 500), tile=st.integers(1, 500), stride=st.sampled_from([1, 8]),
       halo_steps=st.integers(0, 4))
def test_axis_windows_cover_the_axis(length, tile, stride, halo_steps):
    tile = min(length, -(-tile // stride) * stride)
    windows = axis_windows(length, tile, halo_steps * stride, stride)
    assert len(windows) == -(-length // tile)
    halo = halo_steps * stride
    for i, w in enumerate(windows):
        core = min(tile, length - i * tile)
        assert w % stride == 0 and core <= w <= -(-(core + 2 * halo) // stride) * stride


# --- memory ----------------------------------------------------------------------------


def test_forward_peak_counts_live_tensors():
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU()).eval()
    # conv output and ReLU output are alive together: 2 x (1, 4, 16, 16) float32
    assert forward_peak_bytes(net, torch.zeros(1, 1, 16, 16)) == 2 * 4 * 16 * 16 * 4


def test_window_memory_is_measured_per_voxel():
    memory = window_memory(MEDICAL)
    assert 100 < memory.per_pixel < 2000
    assert memory.max_pixels(memory.bytes(10**6)) == 10**6


# --- plan_tiles ------------------------------------------------------------------------


def test_small_volume_within_budget_is_one_window_without_calibration():
    plan = plan_tiles((96, 96, 96), MEDICAL, RunOptions(), workers=1)
    assert len(plan.grid) == 1 and plan.core == (96, 96, 96)
    assert plan.halo_mode == "effective" and plan.halo_agreement == 1.0


def test_small_budget_gives_several_windows_that_fit():
    budget = 400 * 2**20  # the whole 128^3 volume takes ~570 MB
    plan = plan_tiles((128, 128, 128), MEDICAL, RunOptions(memory_budget=budget, overlap=16),
                      workers=1)
    assert len(plan.grid) > 1 and plan.halo == 16
    largest = window_pixels(plan.grid.shape, plan.core, plan.halo, 8)
    assert window_memory(MEDICAL).bytes(largest) <= budget


def test_explicit_tile_wins_over_the_budget():
    plan = plan_tiles((160, 160, 160), MEDICAL,
                      RunOptions(tile=60, memory_budget=1, halo_mode="exact"), workers=2)
    assert plan.core == (64, 64, 64) and plan.tile == 64 and plan.grid.grid_shape == (3, 3, 3)
    assert plan.halo_mode == "exact" and plan.halo_agreement is None


def test_two_d_defaults_are_unchanged():
    plan = plan_tiles((1000, 700), SATELLITE, RunOptions(), workers=4)
    assert plan.tile == SATELLITE.spec.tile and plan.core == (512, 512)
    assert plan.halo == 56 and plan.halo_mode == "exact"


@pytest.mark.parametrize("options, mode", [
    (RunOptions(overlap=10), "given"),
    (RunOptions(halo_mode="exact"), "exact"),
    (RunOptions(halo_mode="effective", overlap=8), "given"),
    (RunOptions(), "effective"),
])
def test_halo_mode_precedence(options, mode):
    assert halo_mode_of(MEDICAL, options) == mode


def test_given_overlap_is_rounded_to_the_stride():
    plan = plan_tiles((96, 96, 96), MEDICAL, RunOptions(overlap=10, tile=48))
    assert plan.halo == 16 and plan.halo_mode == "given"


def test_options_parse_sizes_and_modes():
    options = load_run_options(None, {"memory_budget": "1.5GiB", "halo_mode": "effective"})
    assert options.memory_budget == int(1.5 * 2**30) and options.halo_mode is HaloMode.EFFECTIVE
    with pytest.raises(ConfigError, match="did you mean 'exact'"):
        load_run_options(None, {"halo_mode": "exakt"})
    with pytest.raises(ConfigError, match="memory_budget"):
        load_run_options(None, {"memory_budget": "lots"})


def test_forward_peak_of_a_scripted_model():
    import torch

    net = torch.jit.script(torch.nn.Conv2d(1, 4, 3, padding=1).eval())
    assert forward_peak_bytes(net, torch.zeros(1, 1, 16, 16)) == 4 * 16 * 16 * 4


def test_a_killed_run_of_another_plan_is_not_reused(tmp_path):
    import zarr

    from pipeline.run.plan import fits_store
    from pipeline.store import SEMANTIC

    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    plan = plan_tiles((96, 96, 96), MEDICAL, RunOptions(tile=48, halo_mode="exact"))
    assert fits_store(plan, group)  # nothing written yet
    group.create_array(SEMANTIC, shape=(96, 96, 96), chunks=(48, 48, 48), dtype="uint8")
    assert fits_store(plan, group)
    other = plan_tiles((96, 96, 96), MEDICAL, RunOptions(tile=32, halo_mode="exact"))
    assert not fits_store(other, group)


@pytest.mark.parametrize("bundle", [MEDICAL, SATELLITE], ids=["medical", "satellite"])
@pytest.mark.parametrize("options", [RunOptions(overlap=0), RunOptions(overlap=0, tile=64),
                                     RunOptions()], ids=["no-halo", "no-halo-tiled", "default"])
def test_an_instance_head_gets_a_halo_of_its_nms_radius_on_the_stride(bundle, options):
    """Centre peaks are decided over the NMS window: the halo holds it, rounded to the
    stride (a plan of one window, the whole scene, needs none)."""
    shape = (96, 96, 96) if bundle.spec.ndim == 3 else (300, 300)
    plan = plan_tiles(shape, bundle, options)
    stride = bundle.spec.stride
    assert len(plan.grid) == 1 or plan.halo >= bundle.spec.instances.nms_kernel // 2
    assert len(plan.grid) > 1 or options.tile is None
    assert plan.halo % stride == 0
