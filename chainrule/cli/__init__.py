"""The `chainrule` command. Each sub-command lives in its own module here and only parses
arguments and calls the library; this module wires them together and turns errors into one line.
"""

from __future__ import annotations

import argparse
import sys

from chainrule.cli import datasets, demo, explain, info, predict, train

# Each module defines `register(commands)`, adding its sub-parser with `set_defaults(run=...)`.
COMMANDS = [train, predict, info, explain, datasets, demo]


class UsageError(Exception):
    """A mistake in what the user asked for: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chainrule", description="Train neural networks by backpropagation."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 with one line for unknown options
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("chainrule: interrupted", file=sys.stderr)
        return 130
    except (UsageError, ValueError, TypeError, KeyError, OSError, ArithmeticError) as error:
        # Library errors are written to be read by people: name the problem, never a traceback.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        if isinstance(error, OSError) and error.filename:
            message = f"{error.filename}: {error.strerror or error}"
        print(f"chainrule {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
