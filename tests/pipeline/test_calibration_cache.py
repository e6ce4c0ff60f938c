"""The calibration cache: a model's measurements are kept as JSON and found again by the
model's content, in this process and in the next command."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest

from pipeline.bundle import load_bundle
from pipeline.run.calibration_cache import cache_dir, remembered

_PLAN = r"""
import json, sys, time
from pipeline.bundle import load_bundle
from pipeline.options import RunOptions
from pipeline.run import halo_check, plan, window_memory

calls = {"window-memory": 0, "halo-probe": 0, "halo-check": 0}
def counted(kind, fn):
    def wrapped(*args, **kwargs):
        calls[kind] += 1
        return fn(*args, **kwargs)
    return wrapped
window_memory._measure = counted("window-memory", window_memory._measure)
halo_check._measure_probe = counted("halo-probe", halo_check._measure_probe)
halo_check._measure_check = counted("halo-check", halo_check._measure_check)
start = time.perf_counter()
p = plan.plan_tiles((160, 160, 160), load_bundle("demo-medical"),
                    RunOptions(memory_budget=150 * 2**20), workers=2)
print(json.dumps({"calls": calls, "seconds": time.perf_counter() - start,
                  "plan": [list(p.core), p.halo, p.halo_mode, p.halo_agreement]}))
"""


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGPIPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SEGPIPE_NO_CACHE", raising=False)
    return tmp_path / "cache" / "calibration"


@pytest.fixture
def own_bundle(tmp_path):
    """A copy of demo-medical whose files the test may change."""
    return shutil.copytree(load_bundle("demo-medical").path, tmp_path / "model")


def _counter():
    calls = []

    def measure():
        calls.append(1)
        return {"value": len(calls), "shape": (2, 3)}

    return calls, measure


def _plan_in_a_new_process(cache) -> dict:
    env = {**os.environ, "SEGPIPE_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", _PLAN], env=env, capture_output=True,
                          text=True, timeout=600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_command_plans_from_the_kept_measurements(tmp_path):
    first = _plan_in_a_new_process(tmp_path / "cache")
    kept = sorted(p.name.split("-")[0] + "-" + p.name.split("-")[1]
                  for p in (tmp_path / "cache" / "calibration").iterdir())
    second = _plan_in_a_new_process(tmp_path / "cache")
    print(f"\nplan of a 160^3 volume: {first['seconds']:.2f} s measuring, "
          f"{second['seconds']:.2f} s from the cache")
    assert first["calls"] == {"window-memory": 1, "halo-probe": 1, "halo-check": 1}
    assert kept == ["halo-check", "halo-probe", "window-memory"]
    assert second["calls"] == {"window-memory": 0, "halo-probe": 0, "halo-check": 0}
    assert second["plan"] == first["plan"] and first["plan"][2] == "effective"
    assert second["seconds"] < first["seconds"]


def test_kept_values_come_back_as_json_with_no_path(private_cache, own_bundle):
    bundle = load_bundle(own_bundle)
    calls, measure = _counter()
    first = remembered("probe", bundle, {"a": 1}, measure)
    again = remembered("probe", bundle, {"a": 1}, measure)
    assert first == again == {"value": 1, "shape": [2, 3]} and len(calls) == 1
    (only,) = private_cache.iterdir()
    text = only.read_text()
    assert json.loads(text)["value"] == first
    assert str(own_bundle) not in text and "model" in json.loads(text)["key"]


def test_another_setting_or_model_content_is_measured_again(private_cache, own_bundle):
    calls, measure = _counter()
    remembered("probe", load_bundle(own_bundle), {"a": 1}, measure)
    remembered("probe", load_bundle(own_bundle), {"a": 2}, measure)
    assert len(calls) == 2
    weights = load_bundle(own_bundle).weights_path
    os.utime(weights, ns=(1, 1))  # same content, another time stamp: still kept
    remembered("probe", load_bundle(own_bundle), {"a": 1}, measure)
    assert len(calls) == 2
    with open(weights, "ab") as fh:  # other weights
        fh.write(b"\0")
    remembered("probe", load_bundle(own_bundle), {"a": 1}, measure)
    assert len(calls) == 3
    spec = own_bundle / "model.yaml"
    spec.write_text(spec.read_text() + "\n# edited\n")  # another description
    remembered("probe", load_bundle(own_bundle), {"a": 1}, measure)
    assert len(calls) == 4


@pytest.mark.parametrize("content", ["{not json", json.dumps({"key": {"kind": "other"},
                                                              "value": {"value": 99}}),
                                     json.dumps([1, 2]), ""])
def test_a_damaged_or_foreign_file_is_measured_again_and_replaced(private_cache, own_bundle,
                                                                  content, caplog):
    bundle = load_bundle(own_bundle)
    calls, measure = _counter()
    remembered("probe", bundle, {}, measure)
    (path,) = private_cache.iterdir()
    path.write_text(content)
    with caplog.at_level(logging.WARNING, logger="pipeline.run.calibration_cache"):
        assert remembered("probe", bundle, {}, measure)["value"] == 2
    assert len(calls) == 2 and str(path) in caplog.text and "measuring again" in caplog.text
    assert json.loads(path.read_text())["value"]["value"] == 2


def test_a_failed_measurement_is_not_kept(private_cache, own_bundle):
    bundle = load_bundle(own_bundle)

    def fails():
        raise RuntimeError("cannot run this model")

    with pytest.raises(RuntimeError, match="cannot run"):
        remembered("probe", bundle, {}, fails)
    assert not private_cache.exists() or not any(private_cache.iterdir())
    calls, measure = _counter()
    assert remembered("probe", bundle, {}, measure)["value"] == 1


def test_an_unwritable_cache_still_measures_and_warns_once(tmp_path, monkeypatch, own_bundle,
                                                           caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SEGPIPE_CACHE_DIR", str(blocker))
    bundle = load_bundle(own_bundle)
    calls, measure = _counter()
    with caplog.at_level(logging.WARNING, logger="pipeline.run.calibration_cache"):
        assert remembered("probe", bundle, {}, measure)["value"] == 1
        assert remembered("probe", bundle, {}, measure)["value"] == 2
    warnings = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(warnings) == 1 and str(blocker) in warnings[0].getMessage()


def test_no_cache_measures_every_time_and_writes_nothing(private_cache, monkeypatch,
                                                         own_bundle):
    monkeypatch.setenv("SEGPIPE_NO_CACHE", "1")
    assert cache_dir() is None
    calls, measure = _counter()
    bundle = load_bundle(own_bundle)
    remembered("probe", bundle, {}, measure)
    remembered("probe", bundle, {}, measure)
    assert len(calls) == 2 and not private_cache.exists()


def test_the_default_directory_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("SEGPIPE_CACHE_DIR", raising=False)
    monkeypatch.delenv("SEGPIPE_NO_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "segpipe" / "calibration"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "segpipe" / "calibration"


def test_a_model_file_that_cannot_be_read_is_measured_without_the_cache(private_cache,
                                                                        own_bundle):
    bundle = load_bundle(own_bundle)
    bundle.weights_path.unlink()  # gone after the model was loaded: no digest, no key
    calls, measure = _counter()
    assert remembered("probe", bundle, {}, measure)["value"] == 1
    assert remembered("probe", bundle, {}, measure)["value"] == 2
    assert not private_cache.exists()


@pytest.fixture
def scripted_bundle(tmp_path):
    """A TorchScript bundle that declares no receptive field: two 3x3 convolutions (5)."""
    import torch
    import yaml
    from torch import nn

    folder = tmp_path / "scripted"
    folder.mkdir()
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    torch.jit.script(net.eval()).save(str(folder / "model.pt"))
    spec = {"name": "scripted", "format": "torchscript", "weights": "model.pt", "ndim": 2,
            "input": {"channels": 1, "mean": [0.0], "std": [1.0]},
            "classes": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}],
            "heads": ["semantic"], "tile": 64}
    (folder / "model.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


def test_a_scripted_models_receptive_field_is_probed_once_and_kept(private_cache,
                                                                   scripted_bundle):
    from pipeline.run.plan import _measured_receptive_field, receptive_field_of

    _measured_receptive_field.cache_clear()
    assert receptive_field_of(load_bundle(scripted_bundle)) == 5
    kept = [json.loads(p.read_text()) for p in private_cache.glob("*.json")]
    assert [k["value"]["receptive_field"] for k in kept] == [5]
    _measured_receptive_field.cache_clear()  # a new command: read back, not probed
    (private_cache / next(p.name for p in private_cache.glob("*.json"))).write_text(
        json.dumps({**kept[0], "value": {"receptive_field": 7}}))
    assert receptive_field_of(load_bundle(scripted_bundle)) == 7


def test_a_scripted_model_that_cannot_load_is_an_error_not_a_default_halo(private_cache,
                                                                         scripted_bundle):
    from pipeline.run.plan import _measured_receptive_field, receptive_field_of
    from segcore.errors import ModelError

    _measured_receptive_field.cache_clear()
    bundle = load_bundle(scripted_bundle)
    bundle.weights_path.write_bytes(b"not a TorchScript archive")
    with pytest.raises(ModelError, match="scripted"):
        receptive_field_of(bundle)
    assert not list(private_cache.glob("*.json"))
