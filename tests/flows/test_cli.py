"""The segpipe command line: exit codes, one-line errors, batches, untouched outputs."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def _invoke(args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def _truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _absurd_bands(src: Path, dst: Path) -> Path:
    """Patch SamplesPerPixel (tag 277) of a classic little-endian TIFF to 65535."""
    data = bytearray(src.read_bytes())
    assert data[:4] == b"II*\x00", "fixture expects a classic little-endian TIFF"
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, typ = struct.unpack_from("<HH", data, entry)
        if tag == 277:
            struct.pack_into("<H", data, entry + 8, 65535)
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture()
def good_scene(scene_factory):
    return scene_factory("cli-good", size=(384, 320))


def test_models_lists_demo_satellite():
    code, output = _invoke(["models"])
    assert code == 0 and "demo-satellite" in output


def test_unknown_model_is_unusable(good_scene, tmp_path):
    code, output = _invoke(["run", good_scene[0], "--model", "demo-satelite", "--out", tmp_path])
    assert code == 2
    assert "unknown model 'demo-satelite'" in output and "did you mean 'demo-satellite'" in output
    assert "Traceback" not in output
    assert not any(tmp_path.iterdir())


def test_missing_input_and_bad_flags_are_unusable(tmp_path):
    code, output = _invoke(["run", tmp_path / "nope.tif", "--model", "demo-satellite",
                            "--out", tmp_path / "o"])
    assert code == 2 and "nope.tif" in output and "no such file" in output
    code, _ = _invoke(["run", tmp_path, "--model", "demo-satellite", "--out", tmp_path,
                       "--tile", "abc"])
    assert code == 2
    code, output = _invoke(["run", tmp_path, "--model", "demo-satellite", "--out", tmp_path])
    assert code == 2 and "no input found" in output


@pytest.mark.parametrize("case", ["not-geotiff", "truncated", "absurd-bands", "too-few-bands",
                                  "zero-byte"])
def test_bad_input_gets_one_line_and_exit_1(case, good_scene, scene_factory, tmp_path,
                                            ray_session, prefect_harness):
    inputs = tmp_path / "in"
    inputs.mkdir()
    bad = inputs / f"{case}.tif"
    if case == "not-geotiff":
        bad.write_text("this is a text file, not a GeoTIFF\n")
        reason = "not a GeoTIFF"
    elif case == "truncated":
        _truncated(good_scene[0], bad)
        reason = "truncated"
    elif case == "absurd-bands":
        _absurd_bands(good_scene[0], bad)
        reason = "65535"
    elif case == "zero-byte":
        bad.write_bytes(b"")
        reason = "empty"
    else:
        single = scene_factory("one-band-src", size=(128, 128))[0]
        import rasterio

        with rasterio.open(single) as src:
            profile = {**src.profile, "count": 1}
            with rasterio.open(bad, "w", **profile) as dst:
                dst.write(src.read(1), 1)
        reason = "band"
    out = tmp_path / "out"
    # a finished result of the same scene id must survive the failure untouched
    finished = out / case
    finished.mkdir(parents=True)
    (finished / "report.json").write_text('{"scene_id": "previous"}')
    code, output = _invoke(["run", bad, "--model", "demo-satellite", "--out", out])
    assert code == 1, output
    lines = [ln for ln in output.splitlines() if case in ln and "failed" in ln]
    assert len(lines) == 1, output
    assert reason.lower() in lines[0].lower(), lines[0]
    assert str(bad) in output.replace("\n", "")
    assert "Traceback" not in output
    assert (finished / "report.json").read_text() == '{"scene_id": "previous"}'
    batch = json.loads((out / "batch.json").read_text())
    assert batch["failed"] == 1 and batch["scenes"][0]["status"] == "failed"


def test_batch_continues_past_a_failing_scene(good_scene, tmp_path, ray_session, prefect_harness):
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    (inputs / "sub" / "a.tif").write_bytes(good_scene[0].read_bytes())
    (inputs / "b.tif").write_text("garbage")
    (inputs / "c.tif").write_bytes(good_scene[0].read_bytes())
    out = tmp_path / "out"
    code, output = _invoke(["run", inputs, "--model", "demo-satellite", "--out", out,
                            "--tile", "256"])
    assert code == 1, output
    assert (out / "sub__a" / "report.json").is_file()
    assert (out / "c" / "report.json").is_file()
    assert not (out / "b").exists()
    batch = json.loads((out / "batch.json").read_text())
    assert [s["status"] for s in batch["scenes"]] == ["failed", "ok", "ok"]
    assert batch["scenes"][0]["scene_id"] == "b" and batch["scenes"][0]["reason"]
    csv_text = (out / "batch.csv").read_text()
    assert csv_text.splitlines()[0].startswith("scene_id,input,status,reason")
    assert len(csv_text.strip().splitlines()) == 4


def test_cli_subprocess_exit_code_and_clean_stderr(good_scene, tmp_path):
    """The real entry point in a fresh process: local Ray + Prefect start by themselves."""
    bad = tmp_path / "broken.tif"
    bad.write_text("not a tiff")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    exe = Path(sys.executable).parent / "segpipe"
    proc = subprocess.run(
        [str(exe), "run", str(good_scene[0]), str(bad), "--model", "demo-satellite",
         "--out", str(tmp_path / "out"), "--tile", "256", "--workers", "1"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    failed = [ln for ln in proc.stderr.splitlines() if "failed" in ln]
    assert len(failed) == 1 and "broken.tif" in failed[0], proc.stderr
    assert (tmp_path / "out" / "cli-good" / "report.json").is_file()


# --workers is an upper bound (tests/pipeline/inference/test_pool_capacity.py): 64 on 2 CPUs
# starts 2 workers; only a worker that can never be placed is refused.
@pytest.mark.parametrize(("flag", "value", "words"), [("--gpus-per-worker", "1", "GPU")])
def test_workers_the_cluster_cannot_place_are_refused(flag, value, words, good_scene, tmp_path,
                                                      ray_session, prefect_harness):
    code, output = _invoke(["run", good_scene[0], "--model", "demo-satellite", "--out", tmp_path,
                            flag, value])
    assert code == 2, output
    assert words in output and "free" in output and "Traceback" not in output


def test_unusable_out_is_exit_2_before_any_work(good_scene, tmp_path):
    not_a_dir = tmp_path / "results"
    not_a_dir.write_text("a file where the output directory should be")
    code, output = _invoke(["run", good_scene[0], "--model", "demo-satellite", "--out", not_a_dir])
    assert code == 2, output
    text = " ".join(output.split())
    assert f"--out {not_a_dir}" in text and "cannot write results there" in text
    assert "Traceback" not in output


def test_an_unexpected_error_is_one_line_and_exit_3(good_scene, tmp_path, monkeypatch, capsys):
    import flows.cli
    import pipeline.discovery

    def broken(inputs):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(pipeline.discovery, "find", broken)  # what `run` calls
    monkeypatch.setattr(sys, "argv", ["segpipe", "run", str(good_scene[0]), "--model",
                                      "demo-satellite", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_info:
        flows.cli.main()
    assert exit_info.value.code == 3
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "RuntimeError: disk on fire" in lines[0] and "--debug" in lines[0]
    assert "Traceback" not in err
