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
