"""The installed chainrule's version, read once from the package metadata (pyproject.toml is the
one place it is written)."""

from importlib import metadata

try:
    __version__ = metadata.version("chainrule")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
