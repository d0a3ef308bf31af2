"""The `chainrule` command: parses arguments and calls the library; no logic of its own."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def _demo(args: argparse.Namespace) -> int:
    import chainrule as cr
    import chainrule.functional as F

    x = cr.tensor(np.array([[1.0, 1.0]]))
    w = cr.tensor(np.array([[0.5], [-0.3]]), requires_grad=True)
    b = cr.tensor(np.array([0.1]), requires_grad=True)
    a = F.sigmoid(x @ w + b)
    loss = 0.5 * F.mse_loss(a, np.array([[0.0]]))
    loss.backward()
    print(f"a = {a.item():.4f}, L = {loss.item():.4f}")
    print(f"dL/dw = {w.grad.ravel()}, dL/db = {b.grad}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chainrule", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="compute and print the gradients of one sigmoid unit")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
