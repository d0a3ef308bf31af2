"""The package's shape: imports run one way (engine → functional → nn → optim, data → registry →
train → model files, explain → adapters → faces), and no module reaches into another's private
names. Checked on the source, imports inside functions included."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "chainrule"

# Lower levels never import higher ones (STYLE.md's arrows). A module takes the level of the
# longest prefix listed.
LEVELS = {
    "chainrule.validation": 0,
    "chainrule.random": 0,
    "chainrule.kernels": 0,
    "chainrule._kernels": 0,
    "chainrule.memory": 0,
    "chainrule._memory": 0,
    "chainrule.tracing": 0,
    "chainrule.tensor": 1,
    "chainrule.ops": 1,
    "chainrule.compile": 2,
    "chainrule.gradcheck": 2,
    "chainrule.functional": 3,
    "chainrule.nn": 4,
    "chainrule.optim": 5,
    "chainrule.metrics": 5,
    "chainrule.data": 5,
    "chainrule.loaders": 5,
    "chainrule.datasets": 5,
    "chainrule.atomic": 5,
    "chainrule.safetensors_format": 5,
    "chainrule.architecture": 5,
    "chainrule.registry": 6,
    "chainrule.train": 7,
    "chainrule.io": 8,
    "chainrule.predictor": 8,
    "chainrule.plots": 8,
    "chainrule.explain_text": 8,
    "chainrule.explain": 9,
    "chainrule.experiment": 9,
    "chainrule.sklearn": 10,
    "chainrule.distributed": 10,
    "chainrule.onnx": 10,
    "chainrule.files": 11,
    "chainrule.version": 0,
    "chainrule.playground": 12,
    "chainrule.cli": 12,
    "chainrule.__main__": 12,
    "chainrule": 12,  # the package's __init__ re-exports everything; the faces may use it
}


def level(module: str) -> int:
    best = max((p for p in LEVELS if module == p or module.startswith(p + ".")), key=len)
    return LEVELS[best]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:` (for annotations, never run)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            skipped |= {id(child) for child in ast.walk(node)}
    return skipped


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in the file that runs."""
    found = []
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("chainrule"):
            names = [alias.name for alias in node.names]
            for name in names:  # `from chainrule import nn` imports the module chainrule.nn
                if (PACKAGE / name).exists() or (PACKAGE / f"{name}.py").exists():
                    if node.module == "chainrule":
                        found.append((f"chainrule.{name}", [], node.lineno))
            if node.module != "chainrule":
                found.append((node.module, names, node.lineno))
        elif isinstance(node, ast.Import):
            found += [
                (a.name, [], node.lineno) for a in node.names if a.name.startswith("chainrule")
            ]
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=[module_name(p) for p in SOURCES])
def test_imports_run_one_way(path):
    importer = module_name(path)
    wrong = [
        f"line {line}: {importer} (level {level(importer)}) imports {imported} "
        f"(level {level(imported)})"
        for imported, _, line in imports(path)
        if level(imported) > level(importer)
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", SOURCES, ids=[module_name(p) for p in SOURCES])
def test_no_module_takes_another_modules_private_names(path):
    importer = module_name(path)
    wrong = [
        f"line {line}: {importer} imports {name} from {imported}"
        for imported, names, line in imports(path)
        for name in names
        if name.startswith("_")
        and not name.startswith("__")
        and not imported.startswith(importer)
        # the modules of one package (chainrule.onnx, chainrule.sklearn) share their parts
        and importer.rsplit(".", 1)[0] not in (imported, imported.rsplit(".", 1)[0])
        and not (name in ("_kernels", "_memory") and imported == "chainrule")
    ]
    assert not wrong, "\n".join(wrong)
