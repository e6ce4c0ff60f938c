"""The format registry claims files by name ending before importing a format's reader."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pipeline.formats as formats


@pytest.mark.parametrize("name", sorted(formats._ENDINGS))
def test_the_endings_known_before_import_are_the_formats_own(name):
    assert formats._ENDINGS[name] == formats._load(name).suffixes


def test_every_format_without_known_endings_claims_by_content():
    for name in set(formats._WHERE) - set(formats._ENDINGS):
        assert formats._load(name).suffixes == (), name


@pytest.mark.parametrize(("file", "kind"), [("scan.NII.GZ", "nifti"), ("scan.nii", "nifti"),
                                            ("scene.TIFF", "geotiff"), ("notes.txt", None)])
def test_a_file_is_claimed_by_its_own_format(tmp_path, file, kind):
    path = tmp_path / file
    path.write_bytes(b"")
    found = formats.identify(path)
    assert (found.name if found is not None else None) == kind


def test_identifying_a_nifti_file_imports_no_geotiff_reader(tmp_path):
    """A NIfTI run pays no rasterio/GDAL import (about 0.4 s) to learn it is no GeoTIFF."""
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"")
    code = ("import sys\n"
            "from pathlib import Path\n"
            "from pipeline.formats import identify\n"
            f"assert identify(Path({str(path)!r})).name == 'nifti'\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rasterio'"
            " or m == 'pipeline.formats.geotiff'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", out
