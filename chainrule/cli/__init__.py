"""The `chainrule` command. Each sub-command lives in its own module here and only parses
arguments and calls the library; this module wires them together and turns errors into one line.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import NoReturn

from chainrule.cli import datasets, demo, explain, export, import_, info, playground, predict, train
from chainrule.version import __version__

# Each module defines `register(commands)`, adding its sub-parser with `set_defaults(run=...)`.
COMMANDS = [train, predict, info, explain, playground, datasets, demo, export, import_]


class UsageError(Exception):
    """A mistake in what the user asked for: printed as one line, exit status 2."""


class _OneLineParser(argparse.ArgumentParser):
    """argparse's own errors (unknown option, bad value) as one line, like every other error,
    instead of the usage block: `--help` still shows it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    # Sub-parsers take the class of their parent, so every sub-command answers the same way.
    parser = _OneLineParser(
        prog="chainrule",
        description="Train neural networks by backpropagation — and see every gradient.",
        epilog="`chainrule COMMAND --help` shows a command's options and their defaults.",
    )
    parser.add_argument("--version", action="version", version=f"chainrule {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # argparse exits 2 with one line for unknown options
    except SystemExit as stop:  # --help, --version and usage errors end here, as a status
        return stop.code if isinstance(stop.code, int) else 0
    if args.command is None:  # bare `chainrule`: what it can do, not just a complaint
        parser.print_help()
        return 2

    def one_line_warning(message, category, *_: object, **__: object) -> None:
        print(f"chainrule {args.command}: warning: {message}", file=sys.stderr)

    warnings.showwarning = one_line_warning
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("chainrule: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `chainrule train xor | head`: the reader left, nothing to say
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps Python's exit flush quiet
        return 0
    except (UsageError, ValueError, TypeError, KeyError, OSError, ArithmeticError) as error:
        # Library errors are written to be read by people: name the problem, never a traceback.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        if isinstance(error, OSError) and error.filename:
            message = f"{error.filename}: {error.strerror or error}"
        print(f"chainrule {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
