"""How things are measured: interleaved step timing, the GEMM rate, start-up times in fresh
processes, peak memory in fresh processes, and the machine the numbers came from.

Every figure is a median of repeats; the repeats of the peers are interleaved (round-robin, with a
rotating start), so that a burst of load on the shared machine hits every peer alike.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from peers import Runner

HERE = Path(__file__).resolve().parent


def _spread(samples: list[float]) -> float:
    """(max − min) / median: how much the repeats disagree, as a fraction."""
    middle = statistics.median(samples)
    return (max(samples) - min(samples)) / middle if middle else 0.0


# ---- contention: how much of the machine other processes took while we measured ----------------
# Other engineers' jobs share these cores and are invisible to `ps`; /proc/stat still counts them.
CONTENDED = 0.2  # a sample during which others kept more than 20% of all CPUs busy is contended


def _busy_seconds() -> float | None:
    """CPU-seconds all processes have used (user..steal of /proc/stat's first line), or None."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU-seconds of this process and of the children it has waited for (subprocess peers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class Sample:
    """Times one measured interval and the share of the CPUs other processes used during it."""

    def __enter__(self) -> Sample:
        self._busy, self._own = _busy_seconds(), _own_seconds()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._started
        busy = _busy_seconds()
        if busy is None or self._busy is None:
            self.others = 0.0
            return
        others = (busy - self._busy) - (_own_seconds() - self._own)
        self.others = max(0.0, others / (self.seconds * (os.cpu_count() or 1)))


class Patience:
    """A budget of seconds to spend waiting for other people's jobs to leave the CPUs.

    On a machine shared with other people's jobs, a sample taken during their burst measures them,
    not us (two BLAS threads on two busy cores run up to 50× slower); waiting costs only time.
    A budget of 0 never waits (--smoke).
    """

    def __init__(self, seconds: float, probe_seconds: float = 0.25) -> None:
        self.left = seconds
        self.probe_seconds = probe_seconds
        self.waited = 0.0

    def wait_for_quiet(self, most: float = 30.0) -> None:
        """Sleep until a probe finds the others using at most CONTENDED of the CPUs (or give up)."""
        started = time.perf_counter()
        while self.left > 0 and time.perf_counter() - started < most:
            with Sample() as sample:
                time.sleep(self.probe_seconds)
            self.left -= sample.seconds
            self.waited += sample.seconds
            if sample.others <= CONTENDED:
                return


def summarize(values: list[float], others: list[float]) -> dict:
    """The median of the uncontended samples (all samples when fewer than 3 are uncontended)."""
    clean = [v for v, o in zip(values, others) if o <= CONTENDED]
    chosen = clean if len(clean) >= 3 else values
    return {
        "median": statistics.median(chosen),
        "samples": [round(v, 4) for v in values],
        "others_cpu_share": [round(o, 3) for o in others],
        "uncontended": len(clean),
        "spread": round(_spread(chosen), 4),
    }


# ---- step timing -----------------------------------------------------------------------------
def calibrate(runner: Runner, target_s: float, min_steps: int) -> int:
    """Steps per repeat so that one repeat lasts about `target_s` (after a warm-up of few steps)."""
    steps = runner.run(min(3, min_steps))  # first steps allocate optimizer state, caches, threads
    started = time.perf_counter()
    steps = runner.run(max(1, min_steps // 4))
    per_step = (time.perf_counter() - started) / steps
    return max(min_steps, int(target_s / max(per_step, 1e-9)))


def time_interleaved(
    runners: dict[str, Runner], steps: dict[str, int], repeats: int, patience: Patience
) -> dict:
    """steps/s of every runner: `repeats` rounds that run every runner once, in rotated order.

    Before each sample the machine is given time to be quiet (as `patience` allows), and a sample
    that others contended is taken again (up to twice); the figure is the median of the
    uncontended samples. Returns {peer: {"steps_per_s": median, "samples": [...], ...}}.
    """
    names = list(runners)
    # One full collection now, then freeze what survives (PyTorch's and scikit-learn's modules
    # among it): a user's process holds only its own framework, so no peer should pay for
    # traversing the others' objects. Collections during timing stay on, as in real training.
    gc.collect()
    gc.freeze()
    rates: dict[str, list[float]] = {name: [] for name in names}
    others: dict[str, list[float]] = {name: [] for name in names}
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in names}  # the kept sample
    for round_ in range(repeats):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            for _ in range(3):
                patience.wait_for_quiet()
                with Sample() as sample:
                    done = runners[name].run(steps[name])
                rates[name].append(done / sample.seconds)
                others[name].append(sample.others)
                if sample.others <= CONTENDED or patience.left <= 0:
                    break
            rounds[name].append((rates[name][-1], others[name][-1]))
    gc.unfreeze()
    found = {}
    for name in names:
        summary = summarize(rates[name], others[name])
        found[name] = {"steps_per_s": summary.pop("median"), **summary, "rounds": rounds[name]}
    return found


def round_ratio(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """The median over rounds of a's rate ÷ b's rate in the same round (uncontended rounds when
    there are 3 or more): the machine's slow and fast phases, which /proc/stat cannot see (another
    virtual machine on the same physical core), cancel out within a round."""
    ratios = [ra / rb for (ra, _), (rb, _) in zip(a, b)]
    contended = [max(oa, ob) for (_, oa), (_, ob) in zip(a, b)]
    return summarize(ratios, contended)["median"]


# ---- the GEMM bound --------------------------------------------------------------------------
def gemm_rate(n: int, repeats: int, patience: Patience) -> tuple[list[float], list[float]]:
    """FLOP/s of NumPy's float32 (n × n) @ (n × n), and others' CPU share during each sample:
    the rate at which a step's 6·P·B FLOPs could run."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)  # wake the BLAS threads
    rates, others = [], []
    for _ in range(repeats):
        patience.wait_for_quiet()
        with Sample() as sample:
            for _ in range(4):  # 4 products: long enough for /proc/stat's 10 ms ticks
                np.matmul(a, b, out=out)
        rates.append(4 * 2.0 * n**3 / sample.seconds)
        others.append(sample.others)
    return rates, others


def gemm_runner(n: int) -> Runner:
    """One float32 (n × n) @ (n × n) product per step: timed in every round beside the peers, so
    that a peer's % of the GEMM bound compares the two at the same moment."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)

    def run(steps: int) -> int:
        for _ in range(steps):
            np.matmul(a, b, out=out)
        return steps

    return Runner(run)


def shape_gemm_runner(layers: list[tuple[int, int]], batch: int, dtype: str) -> Runner:
    """A step's own GEMMs and nothing else, in NumPy at the step's exact shapes: per layer the
    forward x·Wᵀ, then gᵀ·x and g·W in the backward (the input's gradient is not needed).

    Small networks cannot reach the large-matrix rate; this bound says what they can.
    """
    rng = np.random.default_rng(0)
    arrays = []
    for i, (n_in, n_out) in enumerate(layers):
        x = rng.standard_normal((batch, n_in)).astype(dtype)
        W = rng.standard_normal((n_out, n_in)).astype(dtype)
        g = rng.standard_normal((batch, n_out)).astype(dtype)
        arrays.append((x, W, g, i > 0))

    def run(steps: int) -> int:
        for _ in range(steps):
            for x, W, g, input_grad in arrays:
                x @ W.T
                g.T @ x
                if input_grad:
                    g @ W
        return steps

    return Runner(run)


# ---- fresh processes -------------------------------------------------------------------------
_IMPORT_SNIPPET = (
    "import time; started = time.perf_counter(); import {module}; "
    "print(time.perf_counter() - started)"
)


def import_times(modules: list[str], repeats: int, patience: Patience) -> dict:
    """Seconds to `import module` in a fresh interpreter (the import alone, and the whole process),
    interleaved across modules; medians of the uncontended samples. Bytecode is cached as on a
    user's machine: PYTHONDONTWRITEBYTECODE (set on some CI and development machines) would
    compile every module from source at every import, doubling chainrule's figure."""
    found: dict[str, dict[str, list[float]]] = {
        m: {"import": [], "process": [], "others": []} for m in modules
    }
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for module in modules:  # write the bytecode caches once, untimed
        subprocess.run([sys.executable, "-c", f"import {module}"], env=environment, check=True)
    for round_ in range(repeats):
        order = modules[round_ % len(modules) :] + modules[: round_ % len(modules)]
        for module in order:
            patience.wait_for_quiet()
            with Sample() as sample:
                done = subprocess.run(
                    [sys.executable, "-c", _IMPORT_SNIPPET.format(module=module)],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=environment,
                )
            found[module]["process"].append(sample.seconds)
            found[module]["others"].append(sample.others)
            found[module]["import"].append(float(done.stdout.strip().splitlines()[-1]))
    result = {}
    for module, times in found.items():
        summary = summarize(times["import"], times["others"])
        process = summarize(times["process"], times["others"])["median"]
        result[module] = {"seconds": summary.pop("median"), "process_seconds": process, **summary}
    return result


def cli_command() -> list[str]:
    """`chainrule train xor` through the installed console script (or `python -m chainrule`)."""
    script = shutil.which("chainrule")
    prefix = [script] if script else [sys.executable, "-m", "chainrule"]
    return [*prefix, "train", "xor"]


def cli_times(repeats: int, patience: Patience) -> dict:
    """Wall seconds of `chainrule train xor`, start to exit, in fresh processes; median."""
    command = cli_command()
    times, others = [], []
    for _ in range(repeats):
        patience.wait_for_quiet()
        with Sample() as sample:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
            return {"command": "chainrule train xor", "error": f"exit {done.returncode}: {last[0]}"}
        times.append(sample.seconds)
        others.append(sample.others)
    summary = summarize(times, others)
    return {
        "command": "chainrule train xor",
        "seconds": summary.pop("median"),
        **summary,
        "last_line": done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "",
    }


def peak_memory(workload: str, peer: str, steps: int, method: str) -> dict:
    """Run memory_probe.py in a fresh interpreter; see there for what is counted."""
    done = subprocess.run(
        [sys.executable, str(HERE / "memory_probe.py"), workload, peer, str(steps), method],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or [""]
        return {"error": f"exit {done.returncode}: {last[0]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the machine -----------------------------------------------------------------------------
def blas_info() -> dict:
    """Which BLAS NumPy calls and with how many threads (threadpoolctl when installed)."""
    info: dict[str, Any] = {
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "MKL_"))}
    }
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        info["threads"] = os.cpu_count() or 1
        info["source"] = "os.cpu_count() (threadpoolctl is not installed)"
        return info
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    numpy_pools = [p for p in pools if "numpy" in p.get("filepath", "")] or pools
    if numpy_pools:
        pool = numpy_pools[0]
        keys = ("internal_api", "version", "architecture", "threading_layer", "num_threads")
        info.update({key: pool.get(key) for key in keys})
        info["threads"] = pool.get("num_threads") or os.cpu_count() or 1
    else:
        info["threads"] = os.cpu_count() or 1
    info["source"] = "threadpoolctl"
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def _git_state() -> dict:
    """The commit measured, and whether chainrule/ had uncommitted changes (read-only git calls)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=HERE.parent, capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "chainrule_uncommitted_changes": bool(git("status", "--porcelain", "--", "chainrule")),
    }


def machine() -> dict:
    """Where and on what the numbers were taken."""
    return {
        **_git_state(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "chainrule": _version("chainrule"),
        "torch": _version("torch"),
        "sklearn": _version("sklearn"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
