"""`chainrule import ONNX_FILE MODEL`: a network from another framework as a chainrule model file,
to train on, predict with or explain."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("import", help="read an ONNX network into a chainrule model file")
    parser.add_argument("onnx_file", help="an ONNX file: a chain of layers chainrule has")
    parser.add_argument("model", help="the chainrule model file to write")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from chainrule.cli import UsageError
    from chainrule.io import save

    try:
        from chainrule.onnx import load_with_metadata
    except ImportError as error:
        raise UsageError(str(error)) from None
    model, metadata = load_with_metadata(args.onnx_file)
    save(model, args.model, metadata=metadata)
    print(f"wrote {args.model}: {len(model)} layers, {model.num_parameters():,} parameters")
    return 0
