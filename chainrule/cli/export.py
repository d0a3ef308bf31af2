"""`chainrule export MODEL ONNX_FILE`: a saved model as an ONNX file, for ONNX Runtime."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export", help="write a saved model as an ONNX file (for ONNX Runtime and other tools)"
    )
    parser.add_argument("model", help="a model file written by `chainrule train --save`")
    parser.add_argument("onnx_file", help="the ONNX file to write")
    parser.add_argument(
        "--opset", type=int, help="the ONNX opset to write (17 or newer; default: 17)"
    )
    parser.add_argument(
        "--input-shape",
        help="the shape of one sample, e.g. 1,28,28 (default: what the first layer takes)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from chainrule.cli import UsageError
    from chainrule.io import load_with_metadata

    try:
        from chainrule.onnx import export, infer_input_shape
    except ImportError as error:
        raise UsageError(str(error)) from None
    model, metadata = load_with_metadata(args.model)
    if args.input_shape is None:
        shape = infer_input_shape(model)
    else:
        try:
            shape = tuple(int(size) for size in args.input_shape.split(","))
        except ValueError:
            raise UsageError(
                f"--input-shape: expected sizes like 1,28,28, got {args.input_shape!r}"
            ) from None
    options = {} if args.opset is None else {"opset": args.opset}
    example = np.zeros((1, *shape), dtype=model.dtype)
    export(model, args.onnx_file, example, metadata=metadata, **options)
    print(f"wrote {args.onnx_file}: input (batch, {', '.join(map(str, shape))}), {model.dtype}")
    return 0
