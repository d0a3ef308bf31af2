"""Write the API reference, generated from the docstrings by pdoc, to docs/api/ (not committed).

    python docs/build_api.py            # then open docs/api/index.html
    python docs/build_api.py OUT_DIR    # somewhere else

Needs pdoc (`pip install -e ".[docs]"`). chainrule.sklearn is left out: it imports scikit-learn,
an optional extra. The same build as one command, run from the repository root:

    pdoc -o docs/api --docformat markdown chainrule chainrule.tensor ... (the MODULES below)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The public modules, in the order the index lists them.
MODULES = [
    "chainrule",
    "chainrule.tensor",
    "chainrule.functional",
    "chainrule.nn",  # with chainrule.nn.init, which its __all__ names
    "chainrule.optim",
    "chainrule.data",
    "chainrule.datasets",
    "chainrule.metrics",
    "chainrule.gradcheck",
    "chainrule.random",
    "chainrule.train",
    "chainrule.io",
    "chainrule.explain",
    "chainrule.distributed",
    "chainrule.playground",
    "chainrule.registry",
    "chainrule.validation",
    "chainrule.predictor",
    "chainrule.compile",
    "chainrule.files",
]


def build(output: Path = ROOT / "docs" / "api", quick: bool = False) -> Path:
    """Render MODULES to HTML under `output`; returns the path of its index.html.

    `quick=True` (for the tests) leaves out the highlighted source and the search index, which
    take most of the build's time.
    """
    import pdoc
    import pdoc.render

    # Markdown docstrings; runnable `>>>` examples are shown as code.
    pdoc.render.configure(docformat="markdown", show_source=not quick, search=not quick)
    # A package's spec adds all its submodules: take the top-level package alone, then the rest.
    pdoc.pdoc(MODULES[0], r"!chainrule\..*", *MODULES[1:], output_directory=output)
    return output / "index.html"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # document this checkout, not another installed copy
    index = build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "api")
    print(f"wrote {index}")
