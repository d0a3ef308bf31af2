"""chainrule.sklearn against scikit-learn's own MLPs: the same hyper-parameters, data and splits.

    python benchmarks/bench_sklearn.py            # the full comparison (a few minutes)
    python benchmarks/bench_sklearn.py --smoke    # seconds: one seed, few epochs, float64 only

For each data set (digits, breast cancer, diabetes), solver, precision (PRECISIONS) and seed: a
stratified train/test split, features standardised on the training part (and the diabetes target
too), then both estimators fit with `random_state=seed`, one after the other in alternating order so
that a burst of load on a shared machine hits both alike. Reported: the test accuracy (R² for
diabetes) as mean ± std over seeds; fit time as mean ± std of the process's CPU time (with one BLAS
thread this is the work done, and unlike the wall clock, which the JSON also holds, it does not
count the time other jobs on a shared machine held the core); the ratio of the median fit times, and
of the median times per epoch (epochs differ when the two stop at different points). BLAS runs on
`--threads` threads (default 1: these matrices are too small for threads to pay, and on a shared
machine more threads only add noise). Writes a Markdown table to stdout and JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

RESULTS = Path(__file__).resolve().parent / "results" / "sklearn.json"
DATASETS = ("digits", "breast_cancer", "diabetes")


def load(name: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """(X, y, is_classification) for one of DATASETS."""
    from sklearn import datasets

    loaders = {
        "digits": (datasets.load_digits, True),
        "breast_cancer": (datasets.load_breast_cancer, True),
        "diabetes": (datasets.load_diabetes, False),
    }
    loader, classification = loaders[name]
    X, y = loader(return_X_y=True)
    return X, y, classification


def prepare(X: np.ndarray, y: np.ndarray, classification: bool, seed: int, dtype: str) -> tuple:
    """Split 75/25 (stratified for classes), standardise on the training part, cast to dtype."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=seed, stratify=y if classification else None
    )
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = (
        scaler.transform(X_train).astype(dtype),
        scaler.transform(X_test).astype(dtype),
    )
    if not classification:  # a unit-scale target, so that the default learning rate suits it
        mean, std = y_train.mean(), y_train.std()
        y_train, y_test = (y_train - mean) / std, (y_test - mean) / std
    return X_train, X_test, y_train, y_test


# The precisions compared. "float32", "float64": float32 or float64 data, both estimators at their
# defaults (both train in the data's precision). "fast": float64 data (what the loaders give),
# sklearn at its default (float64), chainrule told dtype='float32', its speed option.
PRECISIONS = {
    "float32": ("float32", {}, "float32 / float32"),
    "float64": ("float64", {}, "float64 / float64"),
    "fast": ("float64", {"dtype": "float32"}, "dtype='float32' / float64"),
}


def estimators(
    classification: bool, params: dict[str, Any], ours: dict[str, Any]
) -> dict[str, Any]:
    import sklearn.neural_network as sk

    import chainrule.sklearn as cr

    if classification:
        return {
            "chainrule": cr.MLPClassifier(**params, **ours),
            "sklearn": sk.MLPClassifier(**params),
        }
    return {"chainrule": cr.MLPRegressor(**params, **ours), "sklearn": sk.MLPRegressor(**params)}


def run_one(name: str, solver: str, precision: str, seed: int, max_iter: int) -> dict[str, dict]:
    """Fit both estimators on one split; return {library: {score, fit_s, cpu_s, n_iter}}."""
    from sklearn.exceptions import ConvergenceWarning

    X, y, classification = load(name)
    data_dtype, ours, _ = PRECISIONS[precision]
    X_train, X_test, y_train, y_test = prepare(X, y, classification, seed, data_dtype)
    params = {"solver": solver, "random_state": seed, "max_iter": max_iter}
    models = estimators(classification, params, ours)
    order = list(models) if seed % 2 == 0 else list(models)[::-1]
    results = {}
    for library in order:
        model = models[library]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            wall, cpu = time.perf_counter(), time.process_time()
            model.fit(X_train, y_train)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        results[library] = {
            "score": float(model.score(X_test, y_test)),
            "fit_s": wall,
            "cpu_s": cpu,
            "n_iter": int(model.n_iter_),
        }
    return results


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (data set, solver, precision): means and spreads over seeds, speed ratios."""
    rows = []
    keys = sorted(
        {(r["dataset"], r["solver"], r["precision"]) for r in runs},
        key=lambda k: (DATASETS.index(k[0]), k[1], k[2]),
    )
    for dataset, solver, precision in keys:
        group = [
            r
            for r in runs
            if (r["dataset"], r["solver"], r["precision"]) == (dataset, solver, precision)
        ]
        row: dict[str, Any] = {
            "dataset": dataset,
            "solver": solver,
            "precision": precision,
            "seeds": len(group),
        }
        for library in ("chainrule", "sklearn"):
            results = [r[library] for r in group]
            row[library] = {
                "score": _mean_std([r["score"] for r in results]),
                "cpu_s": _mean_std([r["cpu_s"] for r in results]),
                "wall_s": _mean_std([r["fit_s"] for r in results]),
                "n_iter": statistics.fmean(r["n_iter"] for r in results),
                "median_cpu_s": statistics.median(r["cpu_s"] for r in results),
                "median_cpu_s_per_epoch": statistics.median(
                    r["cpu_s"] / r["n_iter"] for r in results
                ),
            }
        cr, sk = row["chainrule"], row["sklearn"]
        row["fit_speedup"] = sk["median_cpu_s"] / cr["median_cpu_s"]
        row["epoch_speedup"] = sk["median_cpu_s_per_epoch"] / cr["median_cpu_s_per_epoch"]
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    metric = {"digits": "accuracy", "breast_cancer": "accuracy", "diabetes": "R²"}
    lines = [
        (
            "| data set | solver | trains in (chainrule / sklearn) | metric | chainrule | "
            "sklearn | chainrule fit (CPU s) | sklearn fit (CPU s) | epochs cr / sk | "
            "fit speed-up | per-epoch speed-up |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cr, sk = row["chainrule"], row["sklearn"]
        lines.append(
            f"| {row['dataset']} | {row['solver']} | {PRECISIONS[row['precision']][2]} | "
            f"{metric[row['dataset']]} | "
            f"{cr['score'][0]:.4f} ± {cr['score'][1]:.4f} | "
            f"{sk['score'][0]:.4f} ± {sk['score'][1]:.4f} | "
            f"{cr['cpu_s'][0]:.3f} ± {cr['cpu_s'][1]:.3f} | "
            f"{sk['cpu_s'][0]:.3f} ± {sk['cpu_s'][1]:.3f} | "
            f"{cr['n_iter']:.0f} / {sk['n_iter']:.0f} | {row['fit_speedup']:.2f}× | "
            f"{row['epoch_speedup']:.2f}× |"
        )
    return "\n".join(lines)


def machine(threads: int | None) -> dict[str, Any]:
    import numpy
    import sklearn

    import chainrule

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "numpy": numpy.__version__,
        "sklearn": sklearn.__version__,
        "chainrule": chainrule.__version__,
        "blas_threads": threads or "library default",
    }
    try:
        with open("/proc/loadavg") as handle:
            info["load_average_at_start"] = handle.read().split()[:3]
    except OSError:
        pass
    return info


def _thread_limit(threads: int | None) -> Any:
    if not threads:
        return nullcontext()
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:
        return nullcontext()
    return threadpool_limits(limits=threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="one seed, 5 epochs, float64: seconds")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per configuration (default 5)")
    parser.add_argument("--solvers", nargs="+", default=["adam", "sgd", "lbfgs"])
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=list(PRECISIONS),
        choices=PRECISIONS,
        help="precisions to compare (see PRECISIONS)",
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--max-iter", type=int, default=200, help="sklearn's default: 200")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (0: the default)")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help=f"JSON output (default {RESULTS})"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.solvers, args.precisions, args.max_iter = 1, ["adam"], ["float64"], 5

    runs = []
    started = time.perf_counter()
    with _thread_limit(args.threads):
        info = machine(args.threads)
        for dataset in args.datasets:
            for solver in args.solvers:
                for precision in args.precisions:
                    for seed in range(args.seeds):
                        result = run_one(dataset, solver, precision, seed, args.max_iter)
                        runs.append(
                            {
                                "dataset": dataset,
                                "solver": solver,
                                "precision": precision,
                                "seed": seed,
                                **result,
                            }
                        )
    rows = summarise(runs)
    table = markdown(rows)
    print(table)
    print(
        f"\n{len(runs)} pairs of fits in {time.perf_counter() - started:.1f} s; "
        f"BLAS threads: {info['blas_threads']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.write_text(
        json.dumps(
            {
                "machine": info,
                "settings": settings,
                "summary": rows,
                "runs": runs,
                "markdown": table,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
