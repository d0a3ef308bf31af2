"""The README's quick start and Python examples work as written."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_quick_start_is_exactly_two_commands_install_and_run():
    text = README.read_text()
    block = re.search(r"## Quick start\s+```bash\n(.*?)```", text, re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip()]
    assert commands == [
        "pip install . && chainrule train xor",
        'pip install -e ".[test]" && python -m pytest',
    ]


def test_ci_runs_the_readmes_test_command():
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -e ".[test]" && python -m pytest' in ci.splitlines()


PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_each_python_example_runs_on_its_own(tmp_path, index):
    """Every block as a reader copies it: alone, with nothing defined by another block (epochs
    shortened so the suite stays fast)."""
    block = PYTHON_BLOCKS[index].replace("epochs=30", "epochs=2").replace("range(30)", "range(2)")
    script = tmp_path / f"readme_example_{index}.py"
    script.write_text(block)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, f"README block {index}:\n{block}\n{result.stderr}"


def commands_in_shell_blocks() -> list[str]:
    blocks = re.findall(r"```(?:bash|console)\n(.*?)```", README.read_text(), re.S)
    lines = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("#")[0].strip().removeprefix("$ ")
            if line.startswith("chainrule "):
                lines.append(line)
    return lines


@pytest.mark.parametrize("command", commands_in_shell_blocks())
def test_each_shell_command_names_a_real_command_and_real_options(command):
    """The shell blocks are not run — they name the reader's own files (data.csv, rows.csv), a
    server that runs until stopped (playground) and an MPI launcher (tests/test_distributed.py
    runs that) — but each `chainrule ...` line must parse: the command and every option exist."""
    from chainrule.cli import build_parser

    parser = build_parser()
    try:
        parser.parse_args(shlex.split(command)[1:])
    except SystemExit as stop:
        raise AssertionError(f"`{command}` does not parse (status {stop.code})") from None
