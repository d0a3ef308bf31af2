"""`chainrule train DATASET`: flags become a TrainConfig (unset flags keep the dataset's preset)."""

from __future__ import annotations

import argparse
import time

import numpy as np


def _hidden(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none", "0"):
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes sizes like 64,32, got {text!r}") from None


def _label_column(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="train a network on a built-in dataset or a CSV/NPZ/IDX file",
        description="Train a network by backpropagation. Options left out take the dataset's "
        "preset (see `chainrule datasets`).",
    )
    parser.add_argument(
        "dataset", help="a built-in dataset name or a path to a .csv, .npz or IDX file"
    )
    parser.add_argument(
        "--hidden", type=_hidden, help="hidden layer sizes, e.g. 64,32 (none: no hidden layer)"
    )
    parser.add_argument("--activation", help="sigmoid, tanh, relu, leaky_relu, gelu, softplus")
    parser.add_argument("--loss", help="mse, half_mse, bce, bce_logits, cross_entropy, huber")
    parser.add_argument("--optimizer", help="sgd, adam, adamw, rmsprop, adagrad")
    parser.add_argument("--lr", type=float, help="learning rate")
    parser.add_argument("--momentum", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="samples per step (0: the full batch)")
    parser.add_argument("--log-every", type=int, help="print `Epoch N, Loss: x` every N epochs")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--val-split", type=float, help="fraction held out for validation")
    parser.add_argument("--test-split", type=float, help="fraction held out for the final test")
    parser.add_argument("--early-stopping", type=int, metavar="PATIENCE")
    parser.add_argument("--dtype", help="float32 (default) or float64")
    parser.add_argument(
        "--label-column", type=_label_column, help="CSV: target column (index or name)"
    )
    parser.add_argument(
        "--no-standardize", action="store_true", help="keep the features as they are"
    )
    parser.add_argument("--save", metavar="PATH", help="write the trained model to PATH")
    parser.add_argument(
        "--plot", metavar="PATH", help="write a PNG of the loss curves (needs matplotlib)"
    )
    parser.add_argument(
        "--boundary", metavar="PATH", help="2-feature data: write a PNG of the decision boundary"
    )
    parser.add_argument("--checkpoint", metavar="DIR", help="write a resumable checkpoint to DIR")
    parser.add_argument("--checkpoint-every", type=int, default=1, metavar="EPOCHS")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in DIR"
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel on MPI: mpiexec -n 2 python -m mpi4py -m chainrule train ... --distributed",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final result")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from chainrule.datasets import load_dataset
    from chainrule.experiment import config_for
    from chainrule.experiment import run as run_experiment

    batch_size = args.batch_size
    overrides = dict(
        hidden=args.hidden,
        activation=args.activation,
        loss=args.loss,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        epochs=args.epochs,
        log_every=args.log_every,
        seed=args.seed,
        val_split=args.val_split,
        test_split=args.test_split,
        dtype=args.dtype,
        label_column=args.label_column,
        early_stopping=args.early_stopping,
        standardize=False if args.no_standardize else None,
    )
    config = config_for(args.dataset, **overrides)
    if batch_size is not None:
        import dataclasses

        config = dataclasses.replace(config, batch_size=batch_size or None)
    options = {} if args.label_column is None else {"label_column": args.label_column}
    data = load_dataset(args.dataset, **options)
    X, y = data
    if args.boundary and (X.shape[1] != 2 or y.dtype.kind not in "iu"):
        raise ValueError(
            f"--boundary draws classes over a plane: it needs 2 features and class labels, "
            f"{args.dataset} has {X.shape[1]} features and {'class' if y.dtype.kind in 'iu' else 'numeric'} targets"
        )
    if args.resume and not args.checkpoint:
        raise ValueError("--resume needs --checkpoint DIR (the directory to resume from)")
    process = None
    if args.distributed:
        from chainrule.distributed import init

        process = init()
    root = process is None or process.is_root
    started = time.perf_counter()
    quiet_print = (lambda line: None) if args.quiet else print
    result = run_experiment(
        config,
        X,
        y,
        print_fn=quiet_print,
        progress=False if args.quiet else None,
        checkpoint=args.checkpoint,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        process=process,
    )
    elapsed = time.perf_counter() - started
    if not root:  # only rank 0 prints and writes files
        return 0
    if not args.quiet and len(result.inputs) <= 16:
        _print_table(result)
    if args.save:
        from chainrule.io import save
        from chainrule.predictor import run_metadata

        save(result.model, args.save, metadata=run_metadata(result, getattr(data, "classes", None)))
    if args.plot:
        from chainrule.plots import plot_history

        plot_history(result.history, args.plot)
    if args.boundary:
        from chainrule.plots import plot_boundary

        plot_boundary(result.model, X, y, args.boundary, mean=result.mean, std=result.std)
    summary = ", ".join(f"{name}: {value:.4f}" for name, value in result.metrics.items())
    print(f"{result.evaluated_on} {summary} ({len(result.history.epochs)} epochs, {elapsed:.2f} s)")
    return 0


def _print_table(result) -> None:
    """Inputs, targets and predictions of a small dataset, one row each."""
    print("input -> target : prediction")
    for row, target, output in zip(result.inputs, result.targets, result.predictions):
        inputs = ", ".join(f"{v:g}" for v in np.ravel(row))
        outputs = ", ".join(f"{v:.4f}" for v in np.ravel(output))
        print(f"({inputs}) -> {np.ravel(target)[0]:g} : {outputs}")
