"""`chainrule datasets`: list the built-in datasets, each with its task and a one-line description."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("datasets", help="list the built-in datasets")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from chainrule.datasets import DATASETS

    width = max(len(name) for name in DATASETS)
    for name, info in DATASETS.items():
        task = f"{info.n_classes} classes" if info.task == "classification" else info.task
        print(f"{name:<{width}}  {task:<14} {info.description}")
    return 0
