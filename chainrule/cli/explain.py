"""`chainrule explain`: the chain rule with numbers, for the tutorial's network or a saved model."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from chainrule.registry import LOSSES

_EPILOG = """examples:
  chainrule explain                       the founding tutorial's sigmoid unit on XOR, epoch 0
  chainrule explain --step --precision 6  ... with the update w <- w - lr*dL/dw, 6 digits
  chainrule explain model.safetensors --input 0,1 --target 1
  chainrule explain model.safetensors --input "0,0;1,1" --target "0;0" --weight "2.weight[0,1]"
"""


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "explain",
        help="show every factor of the chain rule, with numbers, for one gradient step",
        description="Walk backward from the loss one layer at a time and write each gradient as "
        "the chain-rule product with the numbers plugged in, checked by finite differences.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model", nargs="?", help="a saved model file (default: the founding tutorial's network)"
    )
    parser.add_argument(
        "--input", help="comma-separated features; ';' between samples (default: the XOR inputs)"
    )
    parser.add_argument(
        "--target",
        help="comma-separated targets (class index for cross_entropy); ';' between samples",
    )
    parser.add_argument(
        "--loss",
        choices=tuple(LOSSES),
        help="the loss L (default: the model file's own, else half_mse, the tutorial's "
        "½·mean((ŷ − y)²); mse is PyTorch's mean((ŷ − y)²) without the ½)",
    )
    parser.add_argument("--lr", type=float, help="learning rate η of the step")
    parser.add_argument(
        "--weight",
        action="append",
        metavar="NAME[i,j]",
        help="the element whose chain is written out, e.g. 2.weight[0,1]; repeatable",
    )
    parser.add_argument("--precision", type=int, help="significant digits in the text")
    parser.add_argument("--step", action="store_true", help="also show the update w ← w − η·∂L/∂w")
    parser.add_argument("--json", action="store_true", help="print every number as JSON instead")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from chainrule.cli import UsageError
    from chainrule.explain import explain

    if args.model is not None and (args.input is None or args.target is None):
        raise UsageError("a saved model needs --input and --target, e.g. --input 0,1 --target 1")
    loss, note = args.loss, None
    if args.model is None:
        model, x, y = tutorial_network()
        x = x if args.input is None else _rows(args.input, "--input")
        y = y if args.target is None else _rows(args.target, "--target")
    else:
        # The model file's whole predictor: its input scaling and its loss, so the numbers shown
        # are the ones `chainrule predict` computes with.
        predictor = _load(args.model)
        model, raw = predictor.model, _rows(args.input, "--input")
        x = predictor.transform(raw).astype(np.float64)
        if "mean" in predictor.metadata and predictor.input_shape is not None:
            note = (
                f"Input: rows of {predictor.n_features} pixels as images {predictor.input_shape}, "
                f"standardised as the model was trained, x = (raw − {predictor.metadata['mean']})"
                f"/{predictor.metadata['std']}"
            )
        elif "mean" in predictor.metadata:
            note = (
                "Input standardised as the model was trained, x = (raw − mean)/std: "
                f"{np.round(raw[0], 6).tolist()} → {np.round(x[0], 6).tolist()}"
            )
        loss = loss or predictor.loss or _default_loss(predictor)
        y = _targets(args.target, loss, predictor)
    if loss == "cross_entropy" and y.ndim == 2 and y.shape[1] == 1:
        if not np.all(y == np.round(y)):
            raise UsageError(f"--target: cross_entropy needs class indices, got {args.target!r}")
        y = y[:, 0].astype(np.int64)
    options = {"loss": loss, "lr": args.lr, "weight": args.weight}
    explanation = explain(model, x, y, **{k: v for k, v in options.items() if v is not None})
    if args.json:
        print(json.dumps(explanation.to_dict(), indent=2))
    else:
        digits = {} if args.precision is None else {"precision": args.precision}
        if note:
            print(note)
        print(explanation.format(step=args.step, **digits))
    return 0


def tutorial_network() -> tuple[Any, Any, Any]:
    """The founding tutorial's one sigmoid unit on XOR, with its weights at epoch 0.

    The tutorial seeds the global generator (np.random.seed(0)) and draws weights = randn(2, 1),
    bias = randn(1); a local RandomState(0) draws the same numbers and leaves global state alone.
    """
    import numpy as np

    from chainrule import nn

    state = np.random.RandomState(0)
    weights, bias = state.randn(2, 1), state.randn(1)
    model = nn.Sequential(nn.Linear(2, 1, dtype=np.float64, rng=0), nn.Sigmoid())
    model.load_state_dict({"0.weight": weights.T, "0.bias": bias})  # z = X·weights + bias
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    y = np.array([[0], [1], [1], [0]], dtype=np.float64)
    return model, x, y


def _rows(text: str, flag: str) -> Any:
    """'0,1' -> [[0, 1]]; '0,0;1,1' -> [[0, 0], [1, 1]]."""
    import numpy as np

    from chainrule.cli import UsageError

    try:
        rows = [[float(v) for v in row.split(",")] for row in text.split(";")]
    except ValueError:
        raise UsageError(f"{flag}: expected numbers like 0,1 or 0,0;1,1, got {text!r}") from None
    if len({len(row) for row in rows}) != 1:
        raise UsageError(f"{flag}: every sample needs the same number of values, got {text!r}")
    return np.array(rows)


def _default_loss(predictor: Any) -> str:
    """The loss a model file implies when it names none: cross-entropy on logits, BCE on one
    probability, the mean squared error on values."""
    outputs = predictor.outputs(np.zeros((1, predictor.n_features or 1))).shape[1]
    kind = predictor.output_kind()
    if kind == "logits":
        return "cross_entropy" if outputs > 1 else "bce_logits"
    if kind == "probabilities" and outputs == 1:
        return "bce"
    return "mse"


def _targets(text: str, loss: str, predictor: Any) -> Any:
    """--target as the loss takes it: a class index (or name) for cross-entropy, one-hot rows for
    a classifier with several probability outputs, else the numbers given."""
    from chainrule.cli import UsageError
    from chainrule.loaders import is_number

    classes = predictor.classes or []
    rows = []
    for row in text.split(";"):
        items = [item.strip() for item in row.split(",")]
        if len(items) == 1 and items[0] in classes and not is_number(items[0]):
            items = [str(classes.index(items[0]))]
        rows.append(items)
    try:
        y = np.array([[float(v) for v in row] for row in rows])
    except ValueError:
        raise UsageError(
            f"--target: expected numbers or class names ({', '.join(classes)}), got {text!r}"
        ) from None
    width = predictor.outputs(np.zeros((1, predictor.n_features or 1))).shape[1]
    if loss != "cross_entropy" and predictor.task == "classification" and width > 1:
        if y.shape[1] == 1:  # a class index, as one-hot rows over the outputs
            index = y[:, 0].astype(np.int64)
            if np.any(index != y[:, 0]) or np.any((index < 0) | (index >= width)):
                raise UsageError(f"--target: class indices 0 to {width - 1}, got {text!r}")
            y = np.eye(width)[index]
    return y


def _load(path: str) -> Any:
    """The file's whole predictor (an ONNX file too, where the onnx extra is installed)."""
    from chainrule.cli import UsageError
    from chainrule.predictor import Predictor

    if path.endswith(".onnx"):
        try:
            from chainrule.onnx import load_with_metadata
        except ImportError as error:
            raise UsageError(str(error)) from None
        model, metadata = load_with_metadata(path)
        return Predictor(model, metadata)
    return Predictor.load(path)
