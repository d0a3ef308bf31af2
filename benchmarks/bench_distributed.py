"""Data-parallel throughput: chainrule on MPI against PyTorch DDP (gloo), same network, same run.

    python benchmarks/bench_distributed.py          # 1, 2, 4 ranks, 3 interleaved rounds (~3 min)
    python benchmarks/bench_distributed.py --smoke  # 1 and 2 ranks, one short round (seconds)

The workload is a 784-256-256-10 ReLU MLP, float32, SGD with momentum, cross-entropy, global batch
256 (each of N ranks trains on 256/N samples per step), synthetic data. Every process runs one BLAS
thread. Throughput is samples/s of the whole job, timed between barriers, launches excluded; the
table shows the median (and best) over rounds. The script launches itself: `--worker chainrule`
under `mpiexec ... python -m mpi4py`, `--worker torch` under `torchrun` (a plain process for one
rank), `--worker allreduce` to time MPI's Allreduce of the gradient buffer alone (shared memory and
TCP). chainrule runs twice: with Open MPI's defaults, and with the settings for a shared machine.

The last table is a model, not a measurement: a ring all-reduce on N machines moves
2·(N−1)/N · bytes per step, so step(N) = step_compute(1)/N + 2·(N−1)/N · bytes / bandwidth.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
LAYERS = (784, 256, 256, 10)
GLOBAL_BATCH = 256
BATCHES_PER_EPOCH = 20
THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ROOT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def synthetic(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = GLOBAL_BATCH * BATCHES_PER_EPOCH
    return rng.standard_normal((n, LAYERS[0]), dtype=np.float32), rng.integers(0, LAYERS[-1], n)


def gradient_bytes() -> int:
    return 4 * sum(a * b + b for a, b in itertools.pairwise(LAYERS))


# ---- workers --------------------------------------------------------------------------------
class TimedProcess:
    """An MPIProcess whose average_gradients is timed: copy in, Allreduce, waiting for others."""

    def __init__(self, process):
        self.process, self.seconds, self.calls = process, 0.0, 0

    def __getattr__(self, name):
        return getattr(self.process, name)

    def average_gradients(self, parameters, local_count, global_count):
        started = time.perf_counter()
        self.process.average_gradients(parameters, local_count, global_count)
        self.seconds += time.perf_counter() - started
        self.calls += 1


def chainrule_worker(epochs: int) -> dict:
    import chainrule
    from chainrule import distributed, nn

    process = TimedProcess(distributed.init()) if distributed.launched() else None
    X, y = synthetic()
    rng = np.random.default_rng(1)
    layers = []
    for width_in, width_out in itertools.pairwise(LAYERS):
        layers += [nn.Linear(width_in, width_out, rng=rng), nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    options = dict(
        loss="cross_entropy",
        optimizer="sgd",
        lr=0.01,
        momentum=0.9,
        batch_size=GLOBAL_BATCH,
        rng=0,
        process=process,
        progress=False,
    )
    chainrule.fit(model, X, y, epochs=1, **options)  # warm-up: first-touch allocations, caches
    if process is not None:
        process.seconds, process.calls = 0.0, 0
        process.comm.Barrier()
    started = time.perf_counter()
    chainrule.fit(model, X, y, epochs=epochs, **options)
    if process is not None:
        process.comm.Barrier()
    seconds = time.perf_counter() - started
    steps = epochs * BATCHES_PER_EPOCH
    result = {"samples_per_s": steps * GLOBAL_BATCH / seconds, "step_ms": 1e3 * seconds / steps}
    # What views save: copying every averaged gradient back into its own array, once per step.
    grads = [np.empty_like(p.data) for p in model.parameters()]
    flat = np.empty(sum(g.size for g in grads), dtype=np.float32)
    copies = []
    for _ in range(50):
        started = time.perf_counter()
        offset = 0
        for g in grads:
            np.copyto(g, flat[offset : offset + g.size].reshape(g.shape))
            offset += g.size
        copies.append(time.perf_counter() - started)
    result["copy_back_us"] = 1e6 * statistics.median(copies)
    if process is not None:
        local = np.array([process.seconds / process.calls])
        result["average_gradients_ms"] = 1e3 * float(process.sum(local)[0]) / process.world_size
        if not process.is_root:
            return {}
    return result


def allreduce_worker(repeats: int) -> dict:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    results = {}
    for label, size in (("small", 1024), ("gradients", gradient_bytes() // 4)):
        buffer = np.ones(size, dtype=np.float32)
        times = []
        for _ in range(repeats):
            comm.Barrier()
            started = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
            times.append(time.perf_counter() - started)
        slowest = np.array(times)
        comm.Allreduce(
            MPI.IN_PLACE, slowest, op=MPI.MAX
        )  # each iteration lasts as long as its slowest rank
        results[f"{label}_ms"] = 1e3 * float(np.median(slowest))
    return results if comm.Get_rank() == 0 else {}


def torch_worker(epochs: int) -> dict:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    torch.manual_seed(1)
    layers = []
    for width_in, width_out in itertools.pairwise(LAYERS):
        layers += [torch.nn.Linear(width_in, width_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    X, y = (torch.from_numpy(a) for a in synthetic())
    order = np.random.default_rng(0)

    def train(count: int) -> None:
        for _ in range(count):
            permutation = torch.from_numpy(order.permutation(len(X)))
            for start in range(
                0, len(X), GLOBAL_BATCH
            ):  # this rank's contiguous share, as chainrule
                batch = permutation[start : start + GLOBAL_BATCH]
                batch = batch[rank * len(batch) // world : (rank + 1) * len(batch) // world]
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(X[batch]), y[batch]).backward()
                optimizer.step()

    train(1)
    if distributed:
        dist.barrier()
    started = time.perf_counter()
    train(epochs)
    if distributed:
        dist.barrier()
    seconds = time.perf_counter() - started
    steps = epochs * BATCHES_PER_EPOCH
    result = {"samples_per_s": steps * GLOBAL_BATCH / seconds, "step_ms": 1e3 * seconds / steps}
    if distributed:
        buffer = torch.ones(gradient_bytes() // 4)
        times = []
        for _ in range(30):
            dist.barrier()
            started = time.perf_counter()
            dist.all_reduce(buffer)
            times.append(time.perf_counter() - started)
        result["allreduce_ms"] = 1e3 * statistics.median(times)
    return result if rank == 0 else {}


# ---- the driver -----------------------------------------------------------------------------
# Open MPI's defaults (a rank pinned per core, busy-polling while it waits) are fastest on idle
# cores; on a shared or oversubscribed machine a waiting rank should give its core away instead.
SHARED_MACHINE = ("--bind-to", "none", "--mca", "mpi_yield_when_idle", "1")
ENGINES = {  # name in the table: (worker, extra mpiexec arguments)
    "chainrule": ("chainrule", ()),
    "chainrule, yielding": ("chainrule", SHARED_MACHINE),
    "torch DDP": ("torch", ()),
}


def mpiexec() -> str | None:
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def launch(worker: str, ranks: int, amount: int, mpi_arguments: tuple[str, ...] = ()) -> dict:
    """Run one worker job; returns rank 0's JSON, or {"error": the reason}."""
    with tempfile.TemporaryDirectory() as directory:
        out = os.path.join(directory, "result.json")
        script = [str(Path(__file__).resolve()), "--worker", worker, "--amount", str(amount)]
        script += ["--out", out]
        if ranks == 1 and worker != "allreduce":
            command = [sys.executable, *script]
        elif worker == "torch":
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            command += ["--nproc_per_node", str(ranks), *script]
        else:
            command = [mpiexec(), "--oversubscribe", *mpi_arguments, "-n", str(ranks)]
            command += [sys.executable, "-m", "mpi4py", *script]
        env = {**os.environ, **THREADS, **ROOT, "PYTHONPATH": str(REPO)}
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
        # Judged by the result file: gloo sometimes aborts in its teardown, after the measurement.
        if not os.path.exists(out):
            lines = [line for line in result.stderr.splitlines() if "rror" in line]
            return {"error": (lines or result.stderr.strip().splitlines() or ["failed"])[-1]}
        with open(out) as file:
            return json.load(file)


def median(rows: list[dict], key: str) -> float | None:
    values = [row[key] for row in rows if key in row]
    return statistics.median(values) if values else None


def best_of(rows: list[dict]) -> float | None:
    values = [row["samples_per_s"] for row in rows if "samples_per_s" in row]
    return max(values) if values else None


def number(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def throughput_table(runs: dict, ranks: list[int]) -> list[str]:
    header = "| ranks |" + "".join(f" {name} samples/s | × 1 process |" for name in ENGINES)
    lines = [
        header + " chainrule average_gradients ms/step |",
        "|---" * (2 * len(ENGINES) + 2) + "|",
    ]
    for count in ranks:
        cells = [str(count) + (" (oversubscribed)" if count > (os.cpu_count() or 1) else "")]
        for name in ENGINES:
            rate, best = median(runs[name, count], "samples_per_s"), best_of(runs[name, count])
            base, base_best = median(runs[name, 1], "samples_per_s"), best_of(runs[name, 1])
            cells.append(f"{number(rate)} ({number(best)})")
            ok = rate and base and best and base_best
            cells.append(f"{rate / base:.2f}× ({best / base_best:.2f}×)" if ok else "—")
        cells.append(number(median(runs["chainrule", count], "average_gradients_ms"), 3))
        lines.append("| " + " | ".join(cells) + " |")
    for (name, count), rows in runs.items():
        lines += [
            f"- {name} × {count} failed once: {row['error']}" for row in rows if "error" in row
        ]
    return lines


def report(runs: dict, reduce: dict, ranks: list[int], loads: list[float]) -> str:
    rounds = len(runs["chainrule", 1])
    lines = [
        f"784-256-256-10 MLP, float32, global batch {GLOBAL_BATCH}, SGD with momentum; median "
        f"(best) of {rounds} interleaved round(s); 1-minute load average {loads[0]:.1f} before "
        f"the run, {min(loads):.1f}–{max(loads):.1f} during it (its own processes included), "
        f"{os.cpu_count()} CPUs. 'yielding': mpiexec {' '.join(SHARED_MACHINE)}.",
        "",
        *throughput_table(runs, ranks),
        "",
        "average_gradients: copy in, Allreduce and waiting for the slowest rank, mean over ranks.",
    ]
    size = gradient_bytes()
    lines += [
        "",
        f"All-reduce of the {size / 1e6:.2f} MB gradient buffer, 2 ranks (median over iterations "
        "and rounds, slowest rank):",
        "",
        "| transport | 4 KB | gradients | bandwidth |",
        "|---|---|---|---|",
    ]
    bandwidths = {}
    transports = {"MPI shared memory": "sm", "MPI TCP loopback (`--mca btl self,tcp`)": "tcp"}
    for label, key in transports.items():
        small, full = median(reduce[key], "small_ms"), median(reduce[key], "gradients_ms")
        if full:
            bandwidths[label] = size / (full / 1e3)
        lines.append(
            f"| {label} | {number(small and small * 1e3, 1)} µs | {number(full, 3)} ms | "
            f"{number(full and size / full / 1e6, 2)} GB/s |"
        )
    gloo = median(runs["torch DDP", 2], "allreduce_ms") if 2 in ranks else None
    lines.append(
        f"| torch gloo (TCP loopback) | — | {number(gloo, 3)} ms | "
        f"{number(gloo and size / gloo / 1e6, 2)} GB/s |"
    )
    copy = median(runs["chainrule", 1], "copy_back_us")
    step = median(runs["chainrule", 1], "step_ms")
    if copy and step:
        lines += [
            "",
            f"Gradients as views of the flat buffer save a copy back of {copy:.0f} µs per step "
            f"({100 * copy / 1e3 / step:.1f}% of a one-process step of {step:.2f} ms).",
        ]
    if step and bandwidths:
        lines += [
            "",
            "**Model, not a measurement** — ring all-reduce on N machines, one rank each: "
            "step = step(1)/N + 2·(N−1)/N · bytes / bandwidth, with step(1) the measured "
            "one-process step, perfect compute splitting and no latency term (at 64 machines each "
            "rank holds 4 samples, where real compute stops scaling):",
            "",
            "| bandwidth | 8 machines samples/s | speed-up | 64 machines samples/s | speed-up |",
            "|---|---|---|---|---|",
        ]
        assumed = {**bandwidths, "assumed 10 Gb/s Ethernet": 1.25e9}
        for label, bandwidth in assumed.items():
            cells = [f"{label} ({bandwidth / 1e9:.2f} GB/s)"]
            for count in (8, 64):
                seconds = step / 1e3 / count + 2 * (count - 1) / count * size / bandwidth
                rate = GLOBAL_BATCH / seconds
                cells += [number(rate), f"{rate / (GLOBAL_BATCH / (step / 1e3)):.1f}×"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one short round of 1 and 2 ranks")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; --smoke: 1)")
    parser.add_argument(
        "--worker", choices=("chainrule", "torch", "allreduce"), help=argparse.SUPPRESS
    )
    parser.add_argument("--amount", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        work = {"chainrule": chainrule_worker, "torch": torch_worker, "allreduce": allreduce_worker}
        result = work[args.worker](args.amount)
        if result:
            with open(args.out, "w") as file:
                json.dump(result, file)
        return
    if mpiexec() is None:
        sys.exit('bench_distributed: needs mpiexec and mpi4py: pip install "chainrule[mpi]"')
    ranks = [1, 2] if args.smoke else [1, 2, 4]
    rounds = args.rounds or (1 if args.smoke else 3)
    epochs, repeats = (1, 5) if args.smoke else (10, 100)
    runs: dict = {(name, count): [] for name in ENGINES for count in ranks}
    reduce: dict = {"sm": [], "tcp": []}
    loads = [os.getloadavg()[0]]
    for round_ in range(rounds):
        for count in ranks:
            for name, (worker, arguments) in ENGINES.items():
                if count == 1 and name == "chainrule, yielding":  # one process: nothing to yield to
                    runs[name, count].append(runs["chainrule", 1][-1])
                    continue
                runs[name, count].append(launch(worker, count, epochs, arguments))
                loads.append(os.getloadavg()[0])
        reduce["sm"].append(launch("allreduce", 2, repeats))
        reduce["tcp"].append(launch("allreduce", 2, repeats, ("--mca", "btl", "self,tcp")))
        print(f"round {round_ + 1}/{rounds} done (load {os.getloadavg()[0]:.1f})", file=sys.stderr)
    print(report(runs, reduce, ranks, loads))


if __name__ == "__main__":
    main()
