"""chainrule.compile against its peers: one training step, timed round by round in one process.

    python benchmarks/bench_compile.py            # 9 rounds, ~1-2 minutes
    python benchmarks/bench_compile.py --smoke    # 2 short rounds, a few seconds

Peers, each running the same step from the same weights on the same batch: chainrule compiled
(the replay chosen by `backend="auto"`: the C interpreter where the step fits it), chainrule's
NumPy replay (`backend="numpy"`), chainrule eager, JAX with the whole step under one `jax.jit`
(skipped if JAX is not installed: `pip install chainrule[bench]`), PyTorch eager, and the best
NumPy step we could write by hand (preallocated, `out=` throughout). All with `--threads` threads
(NumPy's BLAS through threadpoolctl, torch.set_num_threads, XLA's flags), default 1: on a shared
2-core machine a second BLAS thread spin-waiting for a busy core made a 128x784x256 product 7x
slower (84 ms against 11 ms, measured here under load). The process is also pinned to `--threads`
CPUs, because XLA's CPU runtime ignores its thread flags: unpinned (`--no-pin`), its "one thread"
GEMM used two cores (62 GFLOP/s against NumPy's 32 on one; pinned, 32 and 32). Each peer's cores
used (CPU time ÷ wall time) is reported beside its time, so a peer that escapes the limit shows,
and a row times one 256x2048x2048 float32 product in NumPy and under jax.jit, GFLOP/s and cores.

Each round times every peer once, starting with a different peer each round, so that load from
other processes on a shared machine falls on all alike; the figures are medians over rounds of
the within-round ratios, with their spread (min-max over rounds). A first-call row times tracing
and building a 2-16-16-2 step (a fresh model each time). Absolute µs move from run to run on shared
machines; the ratios are what carry over.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import chainrule as cr  # noqa: E402
from chainrule import functional as F  # noqa: E402
from chainrule import nn, optim  # noqa: E402


@dataclass(frozen=True)
class Workload:
    name: str
    sizes: tuple[int, ...]
    activation: str  # "sigmoid" (after every layer, the tutorial's XOR) or "relu" (hidden only)
    loss: str  # "mse" or "cross_entropy"
    batch: int
    dtype: str
    lr: float
    target: str  # the target, quoted in the report


WORKLOADS = [
    Workload("xor-2-4-1-f64", (2, 4, 1), "sigmoid", "mse", 4, "float64", 0.5, ">= 5x JAX-jit"),
    Workload(
        "mlp-2-16-16-2-b32-f32-ce",
        (2, 16, 16, 2),
        "relu",
        "cross_entropy",
        32,
        "float32",
        0.1,
        ">= 3x JAX-jit",
    ),
    Workload(
        "mlp-784-256-256-10-b128-f32",
        (784, 256, 256, 10),
        "relu",
        "cross_entropy",
        128,
        "float32",
        0.01,
        ">= 1.0x JAX-jit",
    ),
]


# The fourth row, at ~6 GFLOP a step: only with --large (minutes on a shared machine).
LARGE = Workload(
    "mlp-1024-2048-2048-10-b256-f32",
    (1024, 2048, 2048, 10),
    "relu",
    "cross_entropy",
    256,
    "float32",
    0.01,
    ">= 1.0x JAX-jit",
)


def batch(workload: Workload) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    dtype = np.dtype(workload.dtype)
    if workload.name.startswith("xor"):
        x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=dtype)
        return x, np.array([[0], [1], [1], [0]], dtype=dtype)
    x = rng.standard_normal((workload.batch, workload.sizes[0])).astype(dtype)
    return x, rng.integers(0, workload.sizes[-1], workload.batch)


def initial_weights(workload: Workload) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W (out, in), b (out,)) per layer, PyTorch's uniform initialisation, shared by all peers."""
    rng = np.random.default_rng(1)
    dtype = np.dtype(workload.dtype)
    layers = []
    for n_in, n_out in zip(workload.sizes, workload.sizes[1:]):
        bound = 1 / np.sqrt(n_in)
        layers.append(
            (
                rng.uniform(-bound, bound, (n_out, n_in)).astype(dtype),
                rng.uniform(-bound, bound, n_out).astype(dtype),
            )
        )
    return layers


# ---- the peers: each returns step() ------------------------------------------------------------
def chainrule_model(workload: Workload) -> tuple[nn.Module, optim.Optimizer, Callable]:
    layers: list[nn.Module] = []
    weights = initial_weights(workload)
    for i, (w, b) in enumerate(weights):
        linear = nn.Linear(w.shape[1], w.shape[0], dtype=w.dtype)
        linear.weight.data[...] = w
        linear.bias.data[...] = b
        layers.append(linear)
        if workload.activation == "sigmoid":
            layers.append(nn.Sigmoid())
        elif i < len(weights) - 1:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    opt = optim.SGD(model.parameters(), lr=workload.lr)
    loss_function = F.mse_loss if workload.loss == "mse" else F.cross_entropy

    def train_step(x: Any, y: Any) -> cr.Tensor:
        opt.zero_grad()
        loss = loss_function(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return model, opt, train_step


def make_chainrule(workload: Workload, backend: str | None) -> Callable[[], Any]:
    x, y = batch(workload)
    _, _, train_step = chainrule_model(workload)
    step = train_step if backend is None else cr.compile(train_step, backend=backend)
    step(x, y)
    return lambda: step(x, y)


def make_numpy(workload: Workload) -> Callable[[], Any]:
    """The fastest plain-NumPy step we could write: every array preallocated, `out=` throughout."""
    x, y = batch(workload)
    weights = [(w.copy(), b.copy()) for w, b in initial_weights(workload)]
    n, dtype, lr = x.shape[0], x.dtype, workload.lr
    sigmoid = workload.activation == "sigmoid"
    zs = [np.empty((n, w.shape[0]), dtype) for w, _ in weights]
    acts = [x] + [np.empty_like(z) for z in zs]
    grads = [np.empty_like(z) for z in zs]
    gws = [np.empty_like(w) for w, _ in weights]
    gbs = [np.empty_like(b) for _, b in weights]
    ones = np.ones(n, dtype)
    rows = np.arange(n)
    last = len(weights) - 1

    def step() -> None:
        for i, (w, b) in enumerate(weights):
            np.matmul(acts[i], w.T, out=zs[i])
            zs[i] += b
            a = acts[i + 1]
            if sigmoid:
                np.negative(zs[i], out=a)
                np.exp(a, out=a)
                a += 1
                np.reciprocal(a, out=a)
            elif i < last:
                np.maximum(zs[i], 0, out=a)
            else:
                np.copyto(a, zs[i])
        g = grads[last]
        if workload.loss == "mse":
            np.subtract(acts[-1], y, out=g)
            g *= 2 / g.size
        else:
            out = acts[-1]
            out -= out.max(axis=1, keepdims=True)
            np.exp(out, out=g)
            g /= g.sum(axis=1, keepdims=True)
            g[rows, y] -= 1
            g *= 1 / n
        for i in range(last, -1, -1):
            g = grads[i]
            if sigmoid:
                a = acts[i + 1]
                g *= a
                g *= 1 - a
            elif i < last:
                g *= zs[i] > 0
            np.matmul(g.T, acts[i], out=gws[i])
            np.matmul(ones, g, out=gbs[i])
            if i:
                np.matmul(g, weights[i][0], out=grads[i - 1])
            w, b = weights[i]
            gws[i] *= lr
            w -= gws[i]
            gbs[i] *= lr
            b -= gbs[i]

    step()
    return step


def make_torch(workload: Workload, threads: int) -> Callable[[], Any]:
    import torch

    torch.set_num_threads(threads)
    x, y = batch(workload)
    dtype = getattr(torch, workload.dtype)
    layers: list[Any] = []
    weights = initial_weights(workload)
    for i, (w, b) in enumerate(weights):
        linear = torch.nn.Linear(w.shape[1], w.shape[0], dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w))
            linear.bias.copy_(torch.from_numpy(b))
        layers.append(linear)
        if workload.activation == "sigmoid":
            layers.append(torch.nn.Sigmoid())
        elif i < len(weights) - 1:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=workload.lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss_function = (
        torch.nn.functional.mse_loss
        if workload.loss == "mse"
        else torch.nn.functional.cross_entropy
    )

    def step() -> None:
        opt.zero_grad()
        loss_function(model(xt), yt).backward()
        opt.step()

    step()
    return step


def make_jax(workload: Workload) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """The whole step (forward, gradient, update) as one jitted function; `finish` waits for the
    last dispatched step, since JAX returns before it has run."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    x, y = batch(workload)
    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in initial_weights(workload)]
    last = len(params) - 1

    def loss_of(params: list, x: Any, y: Any) -> Any:
        a = x
        for i, (w, b) in enumerate(params):
            z = a @ w.T + b
            if workload.activation == "sigmoid":
                a = jax.nn.sigmoid(z)
            else:
                a = jax.nn.relu(z) if i < last else z
        if workload.loss == "mse":
            return jnp.mean((a - y) ** 2)
        log_p = jax.nn.log_softmax(a)
        return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1))

    @jax.jit
    def train_step(params: list, x: Any, y: Any) -> tuple[list, Any]:
        loss, grads = jax.value_and_grad(loss_of)(params, x, y)
        updated = [
            (w - workload.lr * gw, b - workload.lr * gb) for (w, b), (gw, gb) in zip(params, grads)
        ]
        return updated, loss

    xj, yj = jnp.asarray(x), jnp.asarray(y)
    state = {"params": params}

    def step() -> None:
        state["params"], state["loss"] = train_step(state["params"], xj, yj)

    def finish() -> None:
        state["loss"].block_until_ready()

    step()
    finish()
    return step, finish


def limit_threads(threads: int, pin: bool = True) -> Any:
    """Every peer on `threads` threads and, where the OS allows (and `pin`), on `threads` CPUs;
    returns threadpoolctl's limiter (kept alive) or None."""
    if pin and hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, allowed[:threads])
    os.environ.setdefault(
        "XLA_FLAGS",
        f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
        f"intra_op_parallelism_threads={threads}",
    )
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=threads)
    except ImportError:
        return None


# ---- timing --------------------------------------------------------------------------------------
def timed(step: Callable[[], Any], steps: int, finish: Callable[[], Any] | None = None) -> float:
    """µs per step over `steps` steps (after JAX's last dispatched step has finished)."""
    return timed_with_cores(step, steps, finish)[0]


def timed_with_cores(
    step: Callable[[], Any], steps: int, finish: Callable[[], Any] | None = None
) -> tuple[float, float]:
    """µs per step, and the cores the process kept busy meanwhile (CPU time ÷ wall time)."""
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(steps):
        step()
    if finish is not None:
        finish()
    wall = time.perf_counter() - start
    return wall / steps * 1e6, (time.process_time() - cpu) / max(wall, 1e-9)


def measure(workload: Workload, rounds: int, budget_s: float, threads: int) -> dict[str, Any]:
    peers: dict[str, Callable[[], Any]] = {
        "compiled": make_chainrule(workload, "auto"),
        "compiled-numpy": make_chainrule(workload, "numpy"),
        "eager": make_chainrule(workload, None),
        "numpy-by-hand": make_numpy(workload),
    }
    finishers: dict[str, Callable[[], Any]] = {}
    skipped: dict[str, str] = {}
    try:
        peers["pytorch"] = make_torch(workload, threads)
    except ImportError as error:
        skipped["pytorch"] = str(error)
    try:
        peers["jax-jit"], finishers["jax-jit"] = make_jax(workload)
    except ImportError as error:
        skipped["jax-jit"] = f"JAX is not installed ({error})"
    # How many steps fill the budget, from one short timing each.
    counts = {}
    for name, step in peers.items():
        per_step = timed(step, 3, finishers.get(name)) * 1e-6
        counts[name] = max(3, int(budget_s / max(per_step, 1e-7)))
    names = list(peers)
    samples: dict[str, list[float]] = {name: [] for name in names}
    cores: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            us, busy = timed_with_cores(peers[name], counts[name], finishers.get(name))
            samples[name].append(us)
            cores[name].append(busy)
    result: dict[str, Any] = {
        "workload": workload.name,
        "target": workload.target,
        "us_per_step": {name: statistics.median(values) for name, values in samples.items()},
        "cores_used": {name: statistics.median(values) for name, values in cores.items()},
        "skipped": skipped,
        "ratios": {},
    }
    for reference in ("jax-jit", "pytorch", "eager", "numpy-by-hand"):
        if reference not in samples:
            continue
        for name in ("compiled", "compiled-numpy", "eager"):
            if name == reference:
                continue
            ratios = [ref / own for ref, own in zip(samples[reference], samples[name])]
            result["ratios"][f"{name} vs {reference}"] = {
                "median": statistics.median(ratios),
                "min": min(ratios),
                "max": max(ratios),
            }
    return result


def one_product(rounds: int, size: tuple[int, int, int] = (256, 2048, 2048)) -> dict[str, Any]:
    """One float32 product (m×k by k×n) in NumPy and under jax.jit: GFLOP/s and cores used, the
    check that every peer's products run on the threads it was given."""
    m, k, n = size
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    out = np.empty((m, n), np.float32)
    peers: dict[str, Callable[[], Any]] = {"numpy": lambda: np.matmul(a, b, out=out)}
    try:
        import jax

        product, ja, jb = jax.jit(lambda p, q: p @ q), jax.device_put(a), jax.device_put(b)
        peers["jax-jit"] = lambda: product(ja, jb).block_until_ready()
    except ImportError:
        pass
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in peers}
    for peer in peers.values():
        peer()  # JAX compiles here
    for _ in range(rounds):
        for name, peer in peers.items():
            samples[name].append(timed_with_cores(peer, 3))
    return {
        name: {
            "gflops": 2 * m * k * n / statistics.median(us for us, _ in values) / 1e3,
            "cores_used": statistics.median(busy for _, busy in values),
        }
        for name, values in samples.items()
    } | {"size": f"{m}x{k}x{n}"}


def first_call_ms(repeats: int) -> dict[str, float]:
    """Trace + build of a fresh 2-16-16-2 step (the first call of a compiled function), in ms."""
    workload = WORKLOADS[1]
    x, y = batch(workload)
    times = []
    for _ in range(repeats):
        _, _, train_step = chainrule_model(workload)
        step = cr.compile(train_step)
        start = time.perf_counter()
        step(x, y)
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "max_ms": max(times), "target": "< 50 ms"}


def fit_against_the_loop(workload: Workload, epochs: int, rounds: int) -> dict[str, Any]:
    """`chainrule.fit` against the compiled loop written by hand (the issue's loop: shuffle, then
    `loss = step(xb, yb)` per batch), same network, data and epochs, timed round by round in
    alternating order; ratio = the loop's time ÷ fit's (above 1: fit is faster)."""
    rng = np.random.default_rng(0)
    dtype = np.dtype(workload.dtype)
    if workload.loss == "mse":
        X, y = batch(workload)
    else:
        X = rng.standard_normal((32 * workload.batch, workload.sizes[0])).astype(dtype)
        y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
    n, size = len(X), min(workload.batch, len(X))

    def by_hand() -> None:
        _, _, train_step = chainrule_model(workload)
        step = cr.compile(train_step)
        order = np.random.default_rng(0)
        for _ in range(epochs):
            xs, ys = X, y
            if size < n:
                permutation = order.permutation(n)
                xs, ys = X[permutation], y[permutation]
            for start in range(0, n, size):
                loss = step(xs[start : start + size], ys[start : start + size])  # noqa: F841

    def with_fit() -> None:
        model, opt, _ = chainrule_model(workload)
        cr.fit(model, X, y, loss=workload.loss, optimizer=opt, epochs=epochs, batch_size=size)

    samples: dict[str, list[float]] = {"loop": [], "fit": []}
    for r in range(rounds):
        for name in ("loop", "fit") if r % 2 == 0 else ("fit", "loop"):
            start = time.perf_counter()
            (by_hand if name == "loop" else with_fit)()
            samples[name].append(time.perf_counter() - start)
    ratios = [loop / fit for loop, fit in zip(samples["loop"], samples["fit"])]
    steps = epochs * -(-n // size)
    return {
        "workload": workload.name,
        "epochs": epochs,
        "steps_per_epoch": -(-n // size),
        "us_per_step": {k: statistics.median(v) / steps * 1e6 for k, v in samples.items()},
        "fit vs loop": {
            "median": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
        },
        "target": ">= 0.95x",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="2 short rounds: does it run?")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--budget", type=float, default=0.15, help="seconds per peer per round")
    parser.add_argument("--threads", type=int, default=1, help="threads for every peer")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="leave the process on every CPU (XLA then uses them all: see the product row)",
    )
    parser.add_argument(
        "--workload", action="append", choices=[w.name for w in WORKLOADS], help="only these"
    )
    parser.add_argument("--large", action="store_true", help="add 1024-2048-2048-10, batch 256")
    parser.add_argument("--output", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    rounds, budget = (2, 0.01) if args.smoke else (args.rounds, args.budget)
    threads = args.threads
    limiter = limit_threads(threads, pin=not args.no_pin)  # noqa: F841  (the limit lasts while it lives)
    report = {
        "rounds": rounds,
        "threads": threads,
        "workloads": [
            measure(w, rounds, budget, threads)
            for w in WORKLOADS + ([LARGE] if args.large else [])
            if not args.workload or w.name in args.workload or w is LARGE
        ],
        "one_product": one_product(2 if args.smoke else rounds),
        "first_call": first_call_ms(3 if args.smoke else 15),
        "fit": [
            fit_against_the_loop(WORKLOADS[0], 20 if args.smoke else 2000, rounds),
            fit_against_the_loop(WORKLOADS[1], 1 if args.smoke else 30, rounds),
        ],
    }
    for row in report["workloads"]:
        print(f"\n{row['workload']} (target {row['target']}), µs per step:")
        for name, value in row["us_per_step"].items():
            print(f"  {name:16s} {value:10.2f}   ({row['cores_used'][name]:.2f} cores)")
        for name, ratio in row["ratios"].items():
            spread = f"rounds: {ratio['min']:.2f}-{ratio['max']:.2f}"
            print(f"  {name:34s} {ratio['median']:7.2f}x  ({spread})")
        for name, reason in row["skipped"].items():
            print(f"  {name}: skipped, {reason}")
    product = dict(report["one_product"])
    print(f"\none float32 product {product.pop('size')}:")
    for name, row in product.items():
        print(f"  {name:16s} {row['gflops']:7.1f} GFLOP/s  ({row['cores_used']:.2f} cores)")
    first = report["first_call"]
    print(f"\nfirst call (trace + build) of 2-16-16-2: {first['median_ms']:.1f} ms median")
    for row in report["fit"]:
        ratio, per_step = row["fit vs loop"], row["us_per_step"]
        print(
            f"fit vs the compiled loop by hand, {row['workload']} ({row['steps_per_epoch']} "
            f"steps an epoch): {ratio['median']:.2f}x (rounds: {ratio['min']:.2f}-"
            f"{ratio['max']:.2f}; µs per step: loop {per_step['loop']:.1f}, fit "
            f"{per_step['fit']:.1f}; target {row['target']})"
        )
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
