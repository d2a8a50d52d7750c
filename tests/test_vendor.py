"""The front-end libraries in frontend/static/vendor/ are the pinned npm releases (tools/vendor.py),
checked offline against the sha256 recorded when they were fetched and integrity-checked."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOOL = REPO / "tools" / "vendor.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("vendor_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_vendored_files_are_the_pinned_releases():
    result = subprocess.run(
        [sys.executable, str(TOOL), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("edit", ["changed", "missing"])
def test_check_notices_an_edited_or_missing_file(tmp_path, edit):
    tool = load_tool()
    vendor = tmp_path / "vendor"
    shutil.copytree(tool.VENDOR, vendor)
    tool.VENDOR, tool.MANIFEST, tool.ROOT = vendor, vendor / "versions.json", tmp_path
    target = vendor / "leaflet" / "leaflet.js"
    if edit == "changed":
        target.write_text(target.read_text() + "\nwindow.evil = 1;\n")
    else:
        target.unlink()
    assert tool.check() == ["vendor/leaflet/leaflet.js"]
