"""Where chainrule's time goes in one training step: cProfile over the benchmark's own loop, with
each function's cost per step.

    python benchmarks/profile_engine.py                       # XOR 2-4-1 and 784-256-256-10 SGD
    python benchmarks/profile_engine.py mlp-784-256-256-10-adam --top 25

Named profile_engine.py, not profile.py: that name would shadow the standard library's `profile`,
which cProfile imports.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from peers import make_chainrule
from workloads import BY_NAME, MNIST_SGD, XOR, make_data

# Enough steps that one-off costs (the first step's allocations) vanish from the per-step figures.
STEPS = {XOR.name: 20_000, MNIST_SGD.name: 300}


def profile(name: str, steps: int, top: int) -> None:
    workload = BY_NAME[name]
    runner = make_chainrule(workload, make_data(workload))
    runner.run(min(steps, 50))  # warm-up
    started = time.perf_counter()
    runner.run(steps)
    plain = (time.perf_counter() - started) / steps
    profiler = cProfile.Profile()
    profiler.enable()
    runner.run(steps)
    profiler.disable()
    stats = pstats.Stats(profiler)
    print(f"\n## {name}: {steps} steps, {plain * 1e6:.1f} µs a step without the profiler")
    print("(cProfile's own overhead inflates the small functions; compare them with each other)\n")
    print("| function | calls/step | own µs/step | with callees µs/step |")
    print("|---|---:|---:|---:|")
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)  # type: ignore[attr-defined]
    for (path, line, function), (_, calls, own, cumulative, _) in rows[:top]:
        where = (
            f"{path.rsplit('/', 2)[-2]}/{path.rsplit('/', 1)[-1]}:{line}" if "/" in path else path
        )
        print(
            f"| `{function}` ({where}) | {calls / steps:.1f} | {own / steps * 1e6:.1f} "
            f"| {cumulative / steps * 1e6:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", default=list(STEPS), help=", ".join(BY_NAME))
    parser.add_argument("--steps", type=int, help="steps to profile (default: per workload)")
    parser.add_argument("--top", type=int, default=20, help="functions to list")
    args = parser.parse_args()
    unknown = [name for name in args.workloads if name not in BY_NAME]
    if unknown:
        parser.error(f"unknown workload {unknown[0]!r}; expected one of {', '.join(BY_NAME)}")
    for name in args.workloads:
        profile(name, args.steps or STEPS.get(name, 300), args.top)


if __name__ == "__main__":
    main()
