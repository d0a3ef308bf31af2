"""Train the same networks with chainrule, PyTorch, scikit-learn and plain NumPy; print a Markdown
table and write the same figures as JSON.

    python benchmarks/run.py            # the full suite (several minutes)
    python benchmarks/run.py --smoke    # seconds: tiny repeats, no big network, no PyTorch import
                                        # timing, no CLI run, one memory probe (what CI runs)

What is measured and how is described in benchmarks/README.md; the targets are in report.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
from pathlib import Path

import measure
import numpy as np
import report
from peers import FIT_PEERS, PEERS, Unavailable, make_chainrule, make_numpy, make_torch
from workloads import CLI, FIT, IMPORT, MNIST_SGD, TRAINING, Data, Workload, make_data

RESULTS = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class Settings:
    """How long and how carefully to measure."""

    repeats: int = 9  # interleaved rounds; medians of 9 shrug off three bad rounds
    seconds: float = 0.25  # one repeat of one peer: long against timer noise, short against bursts
    min_steps: int | None = None  # None: the workload's own minimum
    batches: int | None = None  # cap on the batches cycled through (None: the workload's)
    gemm_n: int = 1024  # 1024³: near the peak rate, 10 ms a product, cache effects settled
    gemm_repeats: int = 11
    import_repeats: int = 7
    memory: str = "all"  # "all" peers in fresh processes, or "chainrule-only" (one probe)
    cli: bool = True
    # Seconds the whole run may spend waiting for other people's jobs to leave the CPUs.
    patience: float = 1200.0
    smoke: bool = False


FULL = Settings()
# --smoke proves the whole pipeline works, in seconds; its figures mean nothing.
SMOKE = Settings(
    repeats=3,
    seconds=0.01,
    min_steps=2,
    batches=2,
    gemm_n=256,
    gemm_repeats=3,
    import_repeats=1,
    memory="chainrule-only",
    cli=False,
    patience=0.0,
    smoke=True,
)


def _floor_agrees(workload: Workload, data: Data) -> bool:
    """The NumPy floor trains exactly the network chainrule trains (same start, same updates), so
    it is a floor of the same work and not of less: compare the weights after a few steps."""
    chainrule, floor = make_chainrule(workload, data), make_numpy(workload, data)
    chainrule.run(3)
    floor.run(3)
    tolerance = 1e-5 if workload.dtype == "float32" else 1e-10
    if workload.optimizer == "adam":
        # Adam's m/√v turns a rounding difference in a near-zero gradient into a step of up to lr
        # on that one weight; a real mistake moves every weight by about lr.
        tolerance = max(tolerance, workload.lr / 10)
    pairs = zip(chainrule.parameters(), floor.parameters())
    return all(np.allclose(a, b, rtol=tolerance, atol=tolerance) for a, b in pairs)


def _memory(workload: str, peer: str, steps: int, settings: Settings) -> dict:
    """Peak memory of one peer in fresh processes, or {} where this run skips it."""
    if settings.memory == "chainrule-only" and (peer, workload) != ("chainrule", MNIST_SGD.name):
        return {}
    rss = measure.peak_memory(workload, peer, steps, "rss")
    if "error" in rss:
        return {"memory_error": rss["error"]}
    found = {"peak_memory_bytes": rss["bytes"]}
    if peer != "pytorch" and settings.memory == "all":  # tracemalloc cannot see PyTorch's allocator
        found["tracemalloc_peak_bytes"] = measure.peak_memory(
            workload, peer, steps, "tracemalloc"
        ).get("bytes")
    return found


# Timed in every round beside the peers, as references for "% of the GEMM bound".
GEMM, SHAPE_GEMM = "gemm-1024", "gemm-at-step-shapes"


def _training_row(
    name: str,
    workload: Workload,
    factories: dict,
    settings: Settings,
    threads: int,
    patience: measure.Patience,
) -> dict:
    """Time every peer on one workload (interleaved with the two GEMM references), then measure
    the peers' memory."""
    if settings.batches:
        workload = dataclasses.replace(workload, batches=min(workload.batches, settings.batches))
    data = make_data(workload)
    runners, skipped = {}, {}
    for peer, factory in factories.items():
        try:
            if factory is make_torch:
                runners[peer] = make_torch(workload, data, threads)
            else:
                runners[peer] = factory(workload, data)
        except Unavailable as why:
            skipped[peer] = {"skipped": str(why)}
    runners[GEMM] = measure.gemm_runner(settings.gemm_n)
    runners[SHAPE_GEMM] = measure.shape_gemm_runner(workload.layers, workload.batch, workload.dtype)
    min_steps = settings.min_steps or workload.min_steps
    steps = {peer: measure.calibrate(r, settings.seconds, min_steps) for peer, r in runners.items()}
    timed = measure.time_interleaved(runners, steps, settings.repeats, patience)
    memory_steps = max(3, min(10, min_steps))
    peers = {}
    for peer in factories:
        if peer in skipped:
            peers[peer] = skipped[peer]
            continue
        peers[peer] = {
            **timed[peer],
            "steps_per_repeat": steps[peer],
            "us_per_step": 1e6 / timed[peer]["steps_per_s"],
            **_memory(workload.name, peer, memory_steps, settings),
        }
    row = {
        "name": name,
        "kind": "training",
        "description": workload.description,
        "sizes": list(workload.sizes),
        "batch": workload.batch,
        "dtype": workload.dtype,
        "parameters": workload.parameters,
        "flops_per_step": workload.flops_per_step,
        "peers": peers,
        "references": {GEMM: timed[GEMM], SHAPE_GEMM: timed[SHAPE_GEMM]},
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    _add_ratios(row, settings.gemm_n)
    if name != FIT:
        row["floor_agrees"] = _floor_agrees(workload, data)
        row["dtypes"] = runners["chainrule"].check()
    return row


def _add_ratios(row: dict, gemm_n: int) -> None:
    """Per peer, each a median over rounds of a ratio taken within one round: chainrule ÷ peer;
    % of the GEMM bound, steps/s ÷ (GEMM rate ÷ 6·P·B); % of the step's own GEMM time."""
    gemm, shapes = row["references"][GEMM], row["references"][SHAPE_GEMM]
    gemm["gflops"] = gemm["steps_per_s"] * 2.0 * gemm_n**3 / 1e9
    row["gemm_bound_steps_per_s"] = gemm["gflops"] * 1e9 / row["flops_per_step"]
    row["shape_gemm_bound_steps_per_s"] = shapes["steps_per_s"]
    products_per_step = row["flops_per_step"] / (2.0 * gemm_n**3)
    chainrule = row["peers"]["chainrule"]["rounds"]
    for result in row["peers"].values():
        if "rounds" in result:
            rounds = result["rounds"]
            result["chainrule_ratio"] = measure.round_ratio(chainrule, rounds)
            result["pct_gemm_bound"] = (
                100 * products_per_step * measure.round_ratio(rounds, gemm["rounds"])
            )
            result["pct_shape_gemm_bound"] = 100 * measure.round_ratio(rounds, shapes["rounds"])


def _import_row(settings: Settings, patience: measure.Patience) -> dict:
    modules = ["chainrule", "numpy"] if settings.smoke else ["chainrule", "torch", "numpy"]
    found = measure.import_times(modules, settings.import_repeats, patience)
    if settings.smoke:
        found["torch"] = {"skipped": "--smoke (importing PyTorch takes seconds)"}
    return {"name": IMPORT, "kind": "import", "peers": found}


def _cli_row(settings: Settings, patience: measure.Patience) -> dict:
    result = measure.cli_times(3, patience) if settings.cli else {"skipped": "--smoke"}
    return {"name": CLI, "kind": "cli", "peers": {"chainrule": result}}


def _wanted(name: str, only: list[str] | None) -> bool:
    return not only or name in only


def run(settings: Settings, only: list[str] | None = None) -> dict:
    blas = measure.blas_info()
    threads = blas["threads"]
    started = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    patience = measure.Patience(settings.patience)
    gemm_rates, gemm_others = measure.gemm_rate(settings.gemm_n, settings.gemm_repeats, patience)
    rows, float32_checks = [], {}
    for workload in TRAINING:
        if not _wanted(workload.name, only):
            continue
        if settings.smoke and not workload.in_smoke:
            rows.append(
                {
                    "name": workload.name,
                    "kind": "training",
                    "description": workload.description,
                    "skipped": "--smoke (one step takes ~0.1 s)",
                    "peers": {},
                }
            )
            continue
        print(f"… {workload.name}", file=sys.stderr, flush=True)
        row = _training_row(workload.name, workload, PEERS, settings, threads, patience)
        rows.append(row)
        if workload.dtype == "float32":
            float32_checks[workload.name] = row["dtypes"]
    if _wanted(FIT, only):
        print(f"… {FIT}", file=sys.stderr, flush=True)
        rows.append(_training_row(FIT, MNIST_SGD, FIT_PEERS, settings, threads, patience))
    if _wanted(IMPORT, only):
        print(f"… {IMPORT}", file=sys.stderr, flush=True)
        rows.append(_import_row(settings, patience))
    if _wanted(CLI, only):
        print(f"… {CLI}", file=sys.stderr, flush=True)
        rows.append(_cli_row(settings, patience))
    after_rates, after_others = measure.gemm_rate(settings.gemm_n, settings.gemm_repeats, patience)
    gemm = measure.summarize(
        [r / 1e9 for r in gemm_rates + after_rates], gemm_others + after_others
    )
    gflops = gemm.pop("median")
    torch = sys.modules.get("torch")  # imported by the PyTorch peer, if it ran
    result = {
        "schema": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/run.py", *sys.argv[1:]]),
        "settings": dataclasses.asdict(settings),
        "machine": {**measure.machine(), "load_average_before": load_before},
        "blas": blas,
        "threads": {"numpy_blas": threads, "pytorch": torch.get_num_threads() if torch else None},
        "gemm": {"dtype": "float32", "n": settings.gemm_n, "gflops": gflops, **gemm},
        "workloads": rows,
        "targets": report.targets({row["name"]: row for row in rows}, float32_checks),
        "seconds": round(time.perf_counter() - started, 1),
        "waited_for_quiet_seconds": round(patience.waited, 1),
    }
    result["markdown"] = report.markdown(result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds: checks that it all runs"
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="JSON path (default: results/latest.json, or results/smoke.json with --smoke)",
    )
    parser.add_argument("--repeats", type=int, help="interleaved rounds (the median is reported)")
    parser.add_argument("--seconds", type=float, help="target duration of one repeat of one peer")
    parser.add_argument(
        "--patience",
        type=float,
        help="seconds the run may wait for a quiet "
        f"machine (default {FULL.patience:g}; 0: never wait)",
    )
    parser.add_argument("--only", nargs="+", metavar="ROW", help="run only these rows")
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else FULL
    if args.repeats:
        settings = dataclasses.replace(settings, repeats=args.repeats)
    if args.seconds:
        settings = dataclasses.replace(settings, seconds=args.seconds)
    if args.patience is not None:
        settings = dataclasses.replace(settings, patience=args.patience)
    output = args.output or RESULTS / ("smoke.json" if args.smoke else "latest.json")
    result = run(settings, args.only)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_suffix(output.suffix + ".tmp")
    temporary.write_text(json.dumps(result, indent=2, default=str) + "\n")
    temporary.replace(output)
    print(result["markdown"])
    print(f"(written to {output}; {result['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
