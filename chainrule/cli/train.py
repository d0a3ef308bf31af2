"""`chainrule train DATASET`: flags become a TrainConfig (unset flags keep the dataset's preset)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
import warnings

import numpy as np


def _hidden(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none", "0"):
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes sizes like 64,32, got {text!r}") from None


def _sizes(flag: str, example: str):
    def parse(text: str) -> tuple[int, ...]:
        try:
            return tuple(int(part) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} takes sizes like {example}, got {text!r}"
            ) from None

    return parse


def _label_column(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def _default(field: str) -> str:
    """`TrainConfig`'s default of a field, for --help (a dataset's preset may set another)."""
    from chainrule.experiment import TrainConfig

    value = {f.name: f.default for f in dataclasses.fields(TrainConfig)}[field]
    if isinstance(value, tuple):
        value = ",".join(map(str, value)) or "none"
    return f"default: {value}" if value is not None else "default: none"


def register(commands: argparse._SubParsersAction) -> None:
    from chainrule.registry import HIDDEN_ACTIVATIONS, LOSSES, OPTIMIZERS, SCHEDULES

    parser = commands.add_parser(
        "train",
        help="train a network on a built-in dataset or a CSV/NPZ/IDX file",
        description="Train a network by backpropagation. Options left out take the dataset's "
        "preset where it has one (listed by `chainrule datasets`), else the default shown here.",
        epilog="losses: "
        + "; ".join(f"{name} = {entry.formula}" for name, entry in LOSSES.items()),
    )
    add = parser.add_argument
    add("dataset", help="a built-in dataset name or a path to a .csv, .npz or IDX file")
    add("--hidden", type=_hidden, help=f"hidden layer sizes, e.g. 64,32 ({_default('hidden')})")
    add(
        "--conv",
        type=_sizes("--conv", "16,32"),
        help="a CNN: 3×3 convolutions with these channel counts (padding same, ReLU), a 2×2 "
        "max-pool, then the --hidden layers (default: none, an MLP)",
    )
    add(
        "--image-shape",
        type=_sizes("--image-shape", "1,28,28"),
        metavar="C,H,W",
        help="with --conv: the shape of each row of a table of pixels (CSV, NPZ)",
    )
    add("--activation", choices=HIDDEN_ACTIVATIONS, help=_default("activation"))
    add("--loss", choices=tuple(LOSSES), help="default: cross_entropy for classes, mse for values")
    add("--optimizer", choices=tuple(OPTIMIZERS), help=_default("optimizer"))
    add("--lr", type=float, help=f"learning rate ({_default('lr')})")
    add("--momentum", type=float, help=f"sgd and rmsprop ({_default('momentum')})")
    add("--weight-decay", type=float, help=_default("weight_decay"))
    add("--scheduler", choices=tuple(SCHEDULES), help="learning-rate schedule (default: none)")
    add("--epochs", type=int, help=_default("epochs"))
    add(
        "--batch-size",
        type=int,
        help=f"samples per step, 0: the full batch ({_default('batch_size')})",
    )
    add(
        "--log-every", type=int, help="print `Epoch N, Loss: x` every N epochs (default: ~10 lines)"
    )
    add("--seed", type=int, help=_default("seed"))
    add(
        "--val-split",
        type=float,
        help=f"fraction held out for validation ({_default('val_split')})",
    )
    add(
        "--test-split",
        type=float,
        help=f"fraction held out for the test ({_default('test_split')})",
    )
    add(
        "--early-stopping",
        type=int,
        metavar="PATIENCE",
        help="epochs without improvement (needs --val-split)",
    )
    add("--dtype", choices=("float32", "float64"), help=_default("dtype"))
    add(
        "--label-column",
        type=_label_column,
        help="CSV: target column, index or name (default: last)",
    )
    add("--no-standardize", action="store_true", help="keep the features as they are")
    add("--save", metavar="PATH", help="write the trained model to PATH")
    add("--plot", metavar="PATH", help="write a PNG of the loss curves (needs matplotlib)")
    add("--boundary", metavar="PATH", help="2-feature data: write a PNG of the decision boundary")
    add("--checkpoint", metavar="DIR", help="write resumable checkpoints to DIR")
    add("--checkpoint-every", type=int, default=1, metavar="EPOCHS", help="default: 1")
    add("--resume", action="store_true", help="continue from the newest checkpoint in DIR")
    add(
        "--overwrite",
        action="store_true",
        help="start over in a DIR holding another run's checkpoints",
    )
    add(
        "--no-compile",
        action="store_true",
        help="step eagerly instead of replaying a compiled step",
    )
    add(
        "--distributed",
        action="store_true",
        help="data-parallel on MPI: mpiexec -n 2 python -m mpi4py -m chainrule train ... "
        "--distributed",
    )
    add(
        "--mpi-timeout",
        type=float,
        metavar="SECONDS",
        help="with --distributed: abort the job when a rank waits this long for the others "
        "(default: $CHAINRULE_MPI_TIMEOUT, else wait)",
    )
    add(
        "--keep-going",
        action="store_true",
        help="train on when the loss diverges (by default a diverging run stops with an error)",
    )
    add("--quiet", action="store_true", help="print only the final result")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from chainrule.datasets import load_dataset, loads_images
    from chainrule.experiment import config_for
    from chainrule.experiment import run as run_experiment

    batch_size = args.batch_size
    overrides = dict(
        hidden=args.hidden,
        conv=args.conv,
        image_shape=args.image_shape,
        activation=args.activation,
        loss=args.loss,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        epochs=args.epochs,
        scheduler=args.scheduler,
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
        config = dataclasses.replace(config, batch_size=batch_size or None)
    options = {} if args.label_column is None else {"label_column": args.label_column}
    if config.conv and config.image_shape is None and loads_images(args.dataset):
        options["images"] = True
    if config.image_shape is not None and not config.conv:
        raise ValueError("--image-shape shapes the input of a CNN: give --conv too")
    data = load_dataset(args.dataset, **options)
    X, y = data
    if args.boundary and (X.ndim != 2 or X.shape[1] != 2 or y.dtype.kind not in "iu"):
        raise ValueError(
            f"--boundary draws classes over a plane: it needs 2 features and class labels, "
            f"{args.dataset} has {X.shape[1]} features and "
            f"{'class' if y.dtype.kind in 'iu' else 'numeric'} targets"
        )
    if args.resume and not args.checkpoint:
        raise ValueError("--resume needs --checkpoint DIR (the directory to resume from)")
    _check_outputs(args)
    process = None
    if args.distributed:
        from chainrule.distributed import init

        process = init(timeout=args.mpi_timeout)
    root = process is None or process.is_root
    started = time.perf_counter()
    quiet_print = (lambda line: None) if args.quiet else print
    from chainrule.train import DivergenceWarning

    with warnings.catch_warnings():
        if not args.keep_going:  # a diverging run ends here, with the epoch named
            warnings.simplefilter("error", DivergenceWarning)
        try:
            result = run_experiment(
                config,
                X,
                y,
                print_fn=quiet_print,
                progress=False if args.quiet else None,
                checkpoint=args.checkpoint,
                checkpoint_every=args.checkpoint_every,
                resume=args.resume,
                overwrite=args.overwrite,
                compile=not args.no_compile,
                process=process,
            )
        except DivergenceWarning as diverged:
            raise ValueError(f"{diverged} (--keep-going accepts such a run)") from None
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
    for flag, path in (
        ("model", args.save),
        ("loss curves", args.plot),
        ("boundary", args.boundary),
    ):
        if path and not args.quiet:
            print(f"wrote {flag}: {path}")
    summary = ", ".join(f"{name}: {value:.4f}" for name, value in result.metrics.items())
    ranks = f", {process.world_size} ranks" if process is not None else ""
    print(
        f"{result.evaluated_on} {summary} ({len(result.history.epochs)} epochs{ranks}, "
        f"{elapsed:.2f} s)"
    )
    return 0


def _check_outputs(args: argparse.Namespace) -> None:
    """Everything the run will need after training, checked before it starts: a missing extra
    or an unwritable path found after 300 epochs would lose the run."""
    if args.plot or args.boundary:
        try:
            import matplotlib  # noqa: F401 - only whether it is there
        except ImportError:
            raise ValueError(
                '--plot and --boundary draw with matplotlib: pip install "chainrule[plot]"'
            ) from None
    for flag, path in (("--save", args.save), ("--plot", args.plot), ("--boundary", args.boundary)):
        if not path:
            continue
        directory = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise ValueError(f"{flag} {path}: is a directory, not a file name")
        if not os.path.isdir(directory):
            raise ValueError(f"{flag} {path}: the directory {directory} does not exist")
        if not os.access(directory, os.W_OK):
            raise ValueError(f"{flag} {path}: the directory {directory} is not writable")


def _print_table(result) -> None:
    """Inputs, targets and predictions of a small dataset, one row each."""
    print("input -> target : prediction")
    for row, target, output in zip(result.inputs, result.targets, result.predictions):
        inputs = ", ".join(f"{v:g}" for v in np.ravel(row))
        outputs = ", ".join(f"{v:.4f}" for v in np.ravel(output))
        print(f"({inputs}) -> {np.ravel(target)[0]:g} : {outputs}")
