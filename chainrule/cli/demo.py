"""`chainrule demo`: the gradients of one sigmoid unit, computed by the engine and printed."""

from __future__ import annotations

import argparse

import numpy as np


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("demo", help="compute and print the gradients of one sigmoid unit")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
