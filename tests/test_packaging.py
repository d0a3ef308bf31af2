"""What a release carries: one version, a license, type information."""

from importlib import metadata
from pathlib import Path

import pytest

import chainrule

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def test_version_is_the_installed_metadata_version():
    assert chainrule.__version__ == metadata.version("chainrule")


def test_version_is_written_once_in_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chainrule.__version__ == project["version"]


def test_package_is_marked_typed_and_ships_the_marker():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert (Path(chainrule.__file__).parent / "py.typed").is_file()
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["chainrule"]


def test_license_and_changelog_are_at_the_root():
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert f"## [{chainrule.__version__}]" in changelog


def test_import_chainrule_loads_the_engine_and_leaves_the_rest_for_first_use():
    """`import chainrule` stays quick: fit, model files and Predictor load when first used, and
    every public name is still there, `chainrule.explain` and `chainrule.compile` as functions."""
    import subprocess
    import sys

    script = (
        "import sys, chainrule as cr\n"
        "later = ['chainrule.train', 'chainrule.files', 'chainrule.predictor']\n"
        "loaded = [m for m in later if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "import chainrule.explain, chainrule.compile\n"
        "assert callable(cr.explain) and callable(cr.compile) and callable(cr.fit)\n"
        "assert all(hasattr(cr, name) for name in cr.__all__)\n"
        "assert set(cr.__all__) <= set(dir(cr))\n"
        "assert 'chainrule.train' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with pytest.raises(AttributeError, match="no attribute 'fitt'"):
        chainrule.fitt  # noqa: B018
