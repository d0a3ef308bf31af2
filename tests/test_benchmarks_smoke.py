"""The benchmark suite runs end to end: `benchmarks/run.py --smoke` writes a JSON report with a row
for every workload and a positive figure for every peer it measured.

No timing is asserted: CI machines are shared and slow; speed is judged from the full run's table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Every row the report promises, in its order (benchmarks/workloads.py defines them).
WORKLOADS = [
    "xor-2-4-1",
    "mlp-2-16-16-2",
    "mlp-784-256-256-10-sgd",
    "mlp-784-256-256-10-adam",
    "mlp-1024-2048-2048-10",
    "fit-vs-eager-784-256-256-10",
    "import-time",
    "cli-train-xor",
]
TRAINING_PEERS = ["chainrule", "pytorch", "sklearn", "numpy"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    output = tmp_path_factory.mktemp("benchmarks") / "smoke.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(output.read_text())


@pytest.fixture(scope="module")
def rows(report: dict) -> dict[str, dict]:
    return {row["name"]: row for row in report["workloads"]}


def test_report_has_every_workload_row_in_order(report: dict) -> None:
    assert [row["name"] for row in report["workloads"]] == WORKLOADS


@pytest.mark.parametrize("workload", WORKLOADS[:4])
@pytest.mark.parametrize("peer", TRAINING_PEERS)
def test_every_peer_trains_every_smoke_workload_at_a_positive_rate(
    rows: dict, workload: str, peer: str
) -> None:
    result = rows[workload]["peers"][peer]
    assert result["steps_per_s"] > 0
    assert all(rate > 0 for rate in result["samples"])
    assert result["us_per_step"] == pytest.approx(1e6 / result["steps_per_s"])


@pytest.mark.parametrize("workload", WORKLOADS[:4])
def test_ratios_and_bound_percentages_are_positive(rows: dict, workload: str) -> None:
    for result in rows[workload]["peers"].values():
        assert result["chainrule_ratio"] > 0
        assert result["pct_gemm_bound"] > 0


def test_the_big_network_is_skipped_with_a_reason(rows: dict) -> None:
    assert "smoke" in rows["mlp-1024-2048-2048-10"]["skipped"]


def test_fit_and_the_eager_loop_both_train(rows: dict) -> None:
    peers = rows["fit-vs-eager-784-256-256-10"]["peers"]
    assert peers["chainrule"]["steps_per_s"] > 0
    assert peers["chainrule.fit"]["steps_per_s"] > 0


@pytest.mark.parametrize("workload", WORKLOADS[:4])
def test_the_numpy_floor_trains_the_same_network_as_chainrule(rows: dict, workload: str) -> None:
    assert rows[workload]["floor_agrees"] is True


def test_import_time_of_chainrule_is_measured(rows: dict) -> None:
    assert rows["import-time"]["peers"]["chainrule"]["seconds"] > 0


def test_chainrule_memory_is_measured_in_a_fresh_process(rows: dict) -> None:
    assert rows["mlp-784-256-256-10-sgd"]["peers"]["chainrule"]["peak_memory_bytes"] > 0


def test_float32_workloads_stay_float32(rows: dict) -> None:
    for name in ["mlp-2-16-16-2", "mlp-784-256-256-10-sgd", "mlp-784-256-256-10-adam"]:
        assert all(dtypes == ["float32"] for dtypes in rows[name]["dtypes"].values() if dtypes)


def test_report_records_blas_threads_and_gemm_rate(report: dict) -> None:
    assert report["threads"]["numpy_blas"] >= 1
    assert report["threads"]["pytorch"] == report["threads"]["numpy_blas"]
    assert report["gemm"]["gflops"] > 0


def test_every_target_is_judged_or_marked_not_measured(report: dict) -> None:
    assert report["targets"]
    for target in report["targets"]:
        assert target["met"] in (True, False, None)
        assert (target["met"] is None) == (target["measured"] is None)


def test_markdown_table_names_every_workload(report: dict) -> None:
    for name in WORKLOADS[:6]:
        assert name in report["markdown"]
