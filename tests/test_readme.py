"""The README's quick start and Python examples work as written."""

import re
import subprocess
import sys
from pathlib import Path

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


def test_python_examples_run(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks
    script = tmp_path / "readme_examples.py"
    script.write_text(
        "\n".join(blocks).replace("epochs=30", "epochs=2").replace("range(30)", "range(2)")
    )
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
