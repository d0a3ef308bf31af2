"""`chainrule info MODEL`: the architecture, parameter count and metadata of a saved model."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "info", help="show a saved model's architecture and parameter count"
    )
    parser.add_argument("model", help="a model file written by `chainrule train --save`")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from chainrule.cli import UsageError
    from chainrule.io import inspect

    if args.model.endswith(".onnx"):
        try:
            from chainrule.onnx import describe_onnx
        except ImportError as error:
            raise UsageError(str(error)) from None
        print(describe_onnx(args.model))
        return 0
    print(inspect(args.model))  # checks the whole file, but builds nothing
    return 0
