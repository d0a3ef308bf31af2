"""`chainrule predict MODEL INPUT`: one prediction per row of a CSV file of features."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict", help="predict each row of a CSV file with a saved model"
    )
    parser.add_argument("model", help="a model file written by `chainrule train --save`")
    parser.add_argument("input", help="a CSV file of feature rows (a header row is optional)")
    parser.add_argument("--proba", action="store_true", help="print class probabilities too")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from chainrule.datasets import load_csv
    from chainrule.predictor import Predictor

    predictor = Predictor.load(args.model)  # the metadata is checked against the model here
    X = load_csv(args.input, label_column=None, dtype=predictor.model.dtype).X
    for line in predictor.describe(X, probabilities=args.proba):
        print(line)
    return 0
