"""The code is formatted and linted as pyproject.toml configures ruff (100 columns; E, F, W, I,
UP, B): CI runs this with the rest of the suite, so a lint error fails the build."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ruff(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *arguments, "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_code_is_formatted():
    result = ruff("format", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_passes_the_linter():
    result = ruff("check")
    assert result.returncode == 0, result.stdout + result.stderr
