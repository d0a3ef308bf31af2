"""benchmarks/bench_compile.py runs end to end in its smoke mode and reports every peer it has.

No timing is asserted (CI machines are shared and slow); JAX is optional and skipped when absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_compile_benchmark_smoke_run_reports_every_workload(tmp_path):
    output = tmp_path / "compile.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_compile.py"),
            "--smoke",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    names = [row["workload"] for row in report["workloads"]]
    assert names == ["xor-2-4-1-f64", "mlp-2-16-16-2-b32-f32-ce", "mlp-784-256-256-10-b128-f32"]
    for row in report["workloads"]:
        for peer in ("compiled", "compiled-numpy", "eager", "numpy-by-hand"):
            assert row["us_per_step"][peer] > 0
        assert "compiled vs eager" in row["ratios"]
        assert "jax-jit" in row["us_per_step"] or "jax-jit" in row["skipped"]
    assert report["first_call"]["median_ms"] > 0
    assert [row["workload"] for row in report["fit"]] == names[:2]
    assert all(row["fit vs loop"]["median"] > 0 for row in report["fit"])
