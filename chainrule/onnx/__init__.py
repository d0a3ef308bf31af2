"""ONNX export and import through the `onnx` package (`pip install "chainrule[onnx]"`).

`export` writes a network for ONNX Runtime and other frameworks; `load` reads a linear chain of the
operations chainrule has back into an `nn.Sequential`, checking every size before it allocates.
The core never imports this package. Defines nothing itself.
"""

try:
    import onnx  # noqa: F401 - only to fail here, with the way out, when it is missing
except ImportError:
    raise ImportError(
        'chainrule.onnx needs the onnx package: pip install "chainrule[onnx]"'
    ) from None

from chainrule.onnx.exporters import EXPORTERS, export, infer_input_shape
from chainrule.onnx.importers import IMPORTERS, OnnxImportError
from chainrule.onnx.reading import describe_onnx, load, load_with_metadata

__all__ = [
    "EXPORTERS",
    "IMPORTERS",
    "OnnxImportError",
    "describe_onnx",
    "export",
    "infer_input_shape",
    "load",
    "load_with_metadata",
]
