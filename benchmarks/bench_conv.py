"""Convolutional training steps: chainrule against PyTorch eager, interleaved round by round.

    python benchmarks/bench_conv.py               # both networks, 15 rounds (about a minute)
    python benchmarks/bench_conv.py --smoke       # seconds: 3 short rounds (figures meaningless)
    python benchmarks/bench_conv.py --only lenet5 --rounds 31

Networks (float32, batch 64 of 1×28×28 synthetic images, 10 classes, cross-entropy, SGD lr 0.01):
- `lenet5`: conv 6@5×5, ReLU, 2×2 max-pool, conv 16@5×5, ReLU, 2×2 max-pool, 120, 84, 10.
- `wide`: conv 32@3×3 same, ReLU, 2×2 max-pool, conv 64@3×3 same, ReLU, 2×2 max-pool, 128, 10.

A step is the loop users write: zero_grad, forward, loss, backward, SGD step. Both libraries start
from the same weights and see the same batches; after the timing the script checks that they still
agree (float32, so to about 1e-4). Each round times a few steps of each library, in alternating
order, and the figure is the median over rounds of the ratio within a round (PyTorch's time per
step ÷ chainrule's: above 1 means chainrule is faster), with the lowest and highest round ratio
as the spread; the same from process CPU time beside it, and the share of the machine's CPUs
other processes used meanwhile (above ~20% the wall-clock figures mostly measure the neighbours:
OpenBLAS's threads suffer far more than PyTorch's). PyTorch runs on `torch.set_num_threads(2)` and
NumPy's BLAS on 2 threads (`--threads` changes both).

Memory: the im2col column buffers that the convolutions keep from forward to backward (exact
sizes), and the peak of all NumPy memory chainrule allocates during one step (tracemalloc). The
step peak leaves out the scratch arrays the convolutions reuse from step to step, allocated in
the first step and kept (at most 64 MiB; after a step here: LeNet-5 10 MiB, wide 48 MiB).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import torch  # noqa: E402

import chainrule.functional as F  # noqa: E402
from chainrule import nn, optim  # noqa: E402

BATCH, CLASSES, POOL = 64, 10, 8  # POOL batches of synthetic data, cycled through


def lenet5(library):
    if library is nn:
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, rng=0),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, rng=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 120, rng=2),
            nn.ReLU(),
            nn.Linear(120, 84, rng=3),
            nn.ReLU(),
            nn.Linear(84, 10, rng=4),
        )
    return library.Sequential(
        library.Conv2d(1, 6, 5),
        library.ReLU(),
        library.MaxPool2d(2),
        library.Conv2d(6, 16, 5),
        library.ReLU(),
        library.MaxPool2d(2),
        library.Flatten(),
        library.Linear(16 * 4 * 4, 120),
        library.ReLU(),
        library.Linear(120, 84),
        library.ReLU(),
        library.Linear(84, 10),
    )


def wide(library):
    if library is nn:
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, rng=0),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, rng=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 128, rng=2),
            nn.ReLU(),
            nn.Linear(128, 10, rng=3),
        )
    return library.Sequential(
        library.Conv2d(1, 32, 3, padding=1),
        library.ReLU(),
        library.MaxPool2d(2),
        library.Conv2d(32, 64, 3, padding=1),
        library.ReLU(),
        library.MaxPool2d(2),
        library.Flatten(),
        library.Linear(64 * 7 * 7, 128),
        library.ReLU(),
        library.Linear(128, 10),
    )


NETWORKS = {"lenet5": lenet5, "wide": wide}


def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((POOL, BATCH, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, CLASSES, (POOL, BATCH))
    return X, y


class Ours:
    def __init__(self, make, X, y):
        self.model = make(nn)
        self.optimizer = optim.SGD(self.model.parameters(), lr=0.01)
        self.X, self.y, self.i = X, y, 0

    def step(self):
        k = self.i % POOL
        self.i += 1
        self.optimizer.zero_grad()
        loss = F.cross_entropy(self.model(self.X[k]), self.y[k])
        loss.backward()
        self.optimizer.step()

    def weights(self):
        return [p.data for p in self.model.parameters()]


class Theirs:
    def __init__(self, make, X, y, ours):
        self.model = make(torch.nn)
        with torch.no_grad():  # the same starting point as ours
            for mine, theirs in zip(ours.model.parameters(), self.model.parameters(), strict=True):
                theirs.copy_(torch.from_numpy(mine.data.copy()))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.X = [torch.from_numpy(b) for b in X]
        self.y = [torch.from_numpy(b) for b in y]
        self.i = 0

    def step(self):
        k = self.i % POOL
        self.i += 1
        self.optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(self.model(self.X[k]), self.y[k])
        loss.backward()
        self.optimizer.step()

    def weights(self):
        return [p.detach().numpy() for p in self.model.parameters()]


def _busy_seconds():
    """CPU-seconds every process on the machine has used (/proc/stat), or None off Linux."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def timed(peer, steps):
    """(wall seconds, process CPU seconds) per step, and the share of all CPUs that other
    processes kept busy meanwhile (the machines are shared: that share is how noisy it was)."""
    gc.collect()
    busy, cpu, start = _busy_seconds(), time.process_time(), time.perf_counter()
    for _ in range(steps):
        peer.step()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    others = None
    if busy is not None:
        others = max(0.0, (_busy_seconds() - busy - cpu) / (wall * os.cpu_count()))
    return wall / steps, cpu / steps, others


def column_bytes(model, shape):
    """Bytes of im2col columns the convolutions of `model` hold from forward to backward."""
    total, (n, _, h, w) = 0, shape
    for layer in model.modules():
        if isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            (pt, pb), (pl, pr) = layer._padding
            h, w = h + pt + pb - kh + 1, w + pl + pr - kw + 1  # stride 1, no dilation here
            total += n * layer.in_channels * kh * kw * h * w * layer.weight.data.itemsize
        elif isinstance(layer, nn.MaxPool2d):
            h, w = h // 2, w // 2
    return total


def step_peak_bytes(ours):
    tracemalloc.start()
    tracemalloc.reset_peak()
    ours.step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def bench(name, rounds, target_s):
    X, y = data()
    ours = Ours(NETWORKS[name], X, y)
    theirs = Theirs(NETWORKS[name], X, y, ours)
    for _ in range(4):  # same steps on both before comparing weights: warm-up and a check
        ours.step()
        theirs.step()
    worst = max(
        float(np.max(np.abs(a - b))) for a, b in zip(ours.weights(), theirs.weights(), strict=True)
    )
    per_step = timed(ours, 2)[0]
    steps = max(1, int(target_s / per_step))
    rounds_ = []
    for r in range(rounds):
        order = (ours, theirs) if r % 2 == 0 else (theirs, ours)
        times = {id(peer): timed(peer, steps) for peer in order}
        rounds_.append((times[id(ours)], times[id(theirs)]))
    others = [max(a[2] or 0.0, b[2] or 0.0) for a, b in rounds_]
    wall = [b[0] / a[0] for a, b in rounds_]
    cpu = [b[1] / a[1] for a, b in rounds_]
    return {
        "network": name,
        "steps_per_round": steps,
        "chainrule_ms": 1e3 * statistics.median(a[0] for a, _ in rounds_),
        "torch_ms": 1e3 * statistics.median(b[0] for _, b in rounds_),
        "ratio": statistics.median(wall),
        "ratio_min": min(wall),
        "ratio_max": max(wall),
        "cpu_ratio": statistics.median(cpu),
        "others_busy_median": statistics.median(others),
        "weights_max_difference_after_4_steps": worst,
        "im2col_bytes": column_bytes(ours.model, (BATCH, 1, 28, 28)),
        "step_peak_bytes": step_peak_bytes(ours),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=list(NETWORKS), nargs="*", default=list(NETWORKS))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=0.4, help="per library per round")
    parser.add_argument("--threads", type=int, default=2, help="torch and NumPy BLAS threads")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    rounds, seconds = (3, 0.02) if args.smoke else (args.rounds, args.seconds)
    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(args.threads)
        blas = ", ".join(
            f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info()
        )
    except ImportError:
        blas = "threadpoolctl missing: BLAS threads unknown"
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), NumPy BLAS: {blas}")
    print(
        "| network | chainrule ms/step | PyTorch ms/step | PyTorch ÷ chainrule (wall), median "
        "(min-max) | same, CPU time | others' CPU share | im2col columns held | step peak |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    results = []
    for name in args.only:
        r = bench(name, rounds, seconds)
        results.append(r)
        print(
            f"| {name} | {r['chainrule_ms']:.2f} | {r['torch_ms']:.2f} | {r['ratio']:.2f}× "
            f"({r['ratio_min']:.2f}-{r['ratio_max']:.2f}, {rounds} rounds of "
            f"{r['steps_per_round']} steps) | {r['cpu_ratio']:.2f}× "
            f"| {100 * r['others_busy_median']:.0f}% | {r['im2col_bytes'] / 2**20:.1f} MiB "
            f"| {r['step_peak_bytes'] / 2**20:.1f} MiB |",
            flush=True,
        )
    for r in results:
        if r["weights_max_difference_after_4_steps"] > 1e-3:
            raise SystemExit(
                f"{r['network']}: chainrule and PyTorch weights differ by "
                f"{r['weights_max_difference_after_4_steps']:.2g} after 4 steps"
            )
    return results


if __name__ == "__main__":
    main()
