"""A finished scene that is computed again says why, in one line naming the scene only:
another segpipe version, other options, another model, or (a scene finished before the
fingerprint's parts were kept) "made with other settings".

Real GeoTIFFs, Zarr and the in-process model pool (no Ray).
"""

from __future__ import annotations

import json
import logging
import os

import pytest

from pipeline.formats import Scene
from pipeline.inference.local_pool import LocalPool
from pipeline.options import RunOptions
from pipeline.run import Workspace, resume, run_scene

SIZE = (200, 180)
LOGGER = "pipeline.run.resume"


@pytest.fixture(scope="module")
def pool(tiny_bundle):
    made = LocalPool(str(tiny_bundle.path), cores=2)
    yield made
    made.shutdown()


def _run(image, out, bundle, pool, **options):
    ws = Workspace(Scene(image, "scene", "geotiff"), out)
    return ws, run_scene(ws, bundle, RunOptions(executor="local", **options), pool)


def _reasons(caplog) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    caplog.clear()
    return lines


def test_a_recomputed_scene_says_why(scene_factory, tiny_bundle, pool, tmp_path, caplog,
                                     monkeypatch):
    image = tmp_path / "why.tif"
    image.write_bytes(scene_factory("why", size=SIZE)[0].read_bytes())
    out = tmp_path / "out"
    caplog.set_level(logging.WARNING, logger=LOGGER)
    ws, first = _run(image, out, tiny_bundle, pool, tile=128)
    marker = json.loads((ws.final / resume.INGEST_MARKER).read_text())
    assert marker["fingerprint"] == first.report.fingerprint
    assert marker["parts"]["segpipe"] == resume.segpipe_version()
    assert str(image) not in json.dumps(marker)  # digests, no paths
    _, again = _run(image, out, tiny_bundle, pool, tile=128)
    assert again.reused and _reasons(caplog) == []  # nothing to say: nothing recomputed

    old = resume.segpipe_version()
    monkeypatch.setattr(resume, "segpipe_version", lambda: "999.0")
    _, upgraded = _run(image, out, tiny_bundle, pool, tile=128)
    assert not upgraded.reused
    assert upgraded.report.tiles.computed == upgraded.report.tiles.total
    assert _reasons(caplog) == [f"scene: recomputed: made by segpipe {old}, this is 999.0"]

    _, retiled = _run(image, out, tiny_bundle, pool, tile=96)
    assert not retiled.reused and retiled.report.tiles.tile == 96
    lines = _reasons(caplog)
    assert lines == ["scene: recomputed: the options changed (tile 128 -> 96)"]
    assert str(tmp_path) not in lines[0]

    # a scene finished before the parts were kept (its ingest.json has only the digest)
    (ws.final / resume.INGEST_MARKER).write_text(
        json.dumps({"fingerprint": retiled.report.fingerprint}))
    _, older = _run(image, out, tiny_bundle, pool, tile=128)
    assert not older.reused
    assert _reasons(caplog) == ["scene: recomputed: made with other settings"]

    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    _, touched = _run(image, out, tiny_bundle, pool, tile=128)
    assert not touched.reused and _reasons(caplog) == ["scene: recomputed: the input changed"]


def test_no_line_without_resume(scene_factory, tiny_bundle, pool, tmp_path, caplog):
    image, _ = scene_factory("why-not", size=SIZE)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    _run(image, tmp_path / "out", tiny_bundle, pool, tile=128)
    _, second = _run(image, tmp_path / "out", tiny_bundle, pool, tile=96, resume=False)
    assert not second.reused and _reasons(caplog) == []  # asked for: nothing to explain
