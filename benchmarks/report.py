"""Turn measured rows into the targets we hold chainrule to and the Markdown tables we quote.

The targets are the project's goals, written down once here; a target whose figures were not
measured in this run (e.g. under --smoke) is reported as not measured, never as met.
"""

from __future__ import annotations

from typing import Any

PEER_TITLES = {
    "chainrule": "chainrule",
    "chainrule.fit": "chainrule.fit",
    "pytorch": "PyTorch (eager)",
    "sklearn": "scikit-learn",
    "numpy": "NumPy by hand",
}


def _peer(rows: dict[str, dict], workload: str, peer: str) -> dict:
    row = rows.get(workload) or {}
    return (row.get("peers") or {}).get(peer) or {}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _inverse(ratio: float | None) -> float | None:
    return 1.0 / ratio if ratio else None


def _target(
    name: str, measured: float | None, threshold: float, unit: str, at_most: bool = False
) -> dict:
    met = (
        None if measured is None else (measured <= threshold if at_most else measured >= threshold)
    )
    return {"target": name, "measured": measured, "threshold": threshold, "unit": unit, "met": met}


def targets(rows: dict[str, dict], float32_checks: dict[str, dict]) -> list[dict]:
    """Every goal with its measured value and whether it was met (None: not measured this run)."""
    found = []
    speed = [
        ("xor-2-4-1", 3.0, 3.0, None),
        ("mlp-2-16-16-2", 3.0, 3.0, None),
        ("mlp-784-256-256-10-sgd", 1.2, None, 70.0),
        ("mlp-784-256-256-10-adam", 1.2, None, 70.0),
        ("mlp-1024-2048-2048-10", 1.0, None, 90.0),
    ]
    for workload, vs_torch, floor_factor, bound in speed:
        vs = _peer(rows, workload, "pytorch").get("chainrule_ratio")
        found.append(_target(f"{workload}: ≥ {vs_torch:g}× PyTorch", vs, vs_torch, "×"))
        if floor_factor:
            behind = _inverse(_peer(rows, workload, "numpy").get("chainrule_ratio"))
            found.append(
                _target(
                    f"{workload}: within {floor_factor:g}× of the NumPy floor",
                    behind,
                    floor_factor,
                    "×",
                    at_most=True,
                )
            )
        if bound:
            pct = _peer(rows, workload, "chainrule").get("pct_gemm_bound")
            found.append(_target(f"{workload}: ≥ {bound:g}% of the GEMM bound", pct, bound, "%"))
    fit = _inverse(
        _peer(rows, "fit-vs-eager-784-256-256-10", "chainrule.fit").get("chainrule_ratio")
    )
    found.append(_target("chainrule.fit at least as fast as the eager loop", fit, 1.0, "×"))
    seconds = _peer(rows, "import-time", "chainrule").get("seconds")
    found.append(_target("import chainrule < 0.3 s", seconds, 0.3, "s", at_most=True))
    mnist = "mlp-784-256-256-10-sgd"
    memory = _ratio(
        _peer(rows, mnist, "chainrule").get("peak_memory_bytes"),
        _peer(rows, mnist, "pytorch").get("peak_memory_bytes"),
    )
    found.append(_target(f"{mnist}: peak memory ≤ ½ of PyTorch's", memory, 0.5, "×", at_most=True))
    kept = [
        all(dtypes == ["float32"] for dtypes in check.values() if dtypes)
        for check in float32_checks.values()
    ]
    found.append(
        {
            "target": (
                "float32 stays float32 (outputs, losses, parameters, gradients, optimizer state)"
            ),
            "measured": None if not kept else float(all(kept)),
            "threshold": 1.0,
            "unit": "",
            "met": None if not kept else all(kept),
        }
    )
    return found


# ---- Markdown --------------------------------------------------------------------------------
def _number(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "—"
    if abs(value) >= 100 or digits == 0:
        return f"{value:,.0f}{suffix}"
    return f"{value:,.{digits}f}{suffix}"


def _mark(met: bool | None) -> str:
    return {True: "✓", False: "✗", None: "not measured"}[met]


def _training_table(rows: list[dict]) -> list[str]:
    header = (
        "| workload | peer | steps/s | µs/step | chainrule ÷ peer | % of GEMM bound "
        "| % of own-shape GEMMs | peak memory MB | spread |"
    )
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        if row["kind"] != "training":
            continue
        title = f"**{row['name']}** ({row['description']})"
        if row.get("skipped"):
            lines.append(f"| {title} | all | skipped: {row['skipped']} | | | | | | |")
            continue
        gemm = row["references"]["gemm-1024"]["gflops"]
        title += f"; GEMM {gemm:.0f} GFLOP/s in these rounds"
        for i, (peer, result) in enumerate(row["peers"].items()):
            label = title if i == 0 else ""
            if "skipped" in result:
                lines.append(
                    f"| {label} | {PEER_TITLES[peer]} | — ({result['skipped']}) | | | | | | |"
                )
                continue
            memory = result.get("peak_memory_bytes")
            lines.append(
                f"| {label} | {PEER_TITLES[peer]} | {_number(result['steps_per_s'])} "
                f"| {_number(result['us_per_step'], 1)} "
                f"| {'—' if peer == 'chainrule' else _number(result['chainrule_ratio'], 2, '×')} "
                f"| {_number(result['pct_gemm_bound'], 1)} "
                f"| {_number(result['pct_shape_gemm_bound'], 1)} "
                f"| {'—' if memory is None else _number(memory / 2**20, 1)} "
                f"| {result['spread'] * 100:.0f}% |"
            )
    return lines


def _startup_table(rows: list[dict]) -> list[str]:
    lines = ["| what | seconds (median) | whole process, s | samples |", "|---|---:|---:|---|"]
    for row in rows:
        if row["kind"] == "import":
            for module, result in row["peers"].items():
                if "skipped" in result:
                    lines.append(f"| `import {module}` | — ({result['skipped']}) | | |")
                    continue
                samples = ", ".join(f"{s:.3f}" for s in result["samples"])
                lines.append(
                    f"| `import {module}` | {result['seconds']:.3f} "
                    f"| {result['process_seconds']:.3f} | {samples} |"
                )
        elif row["kind"] == "cli":
            result = row["peers"]["chainrule"]
            if "seconds" in result:
                samples = ", ".join(f"{s:.2f}" for s in result["samples"])
                lines.append(
                    f"| `chainrule train xor` | {result['seconds']:.2f} "
                    f"| {result['seconds']:.2f} | {samples} |"
                )
            else:
                reason = result.get("skipped") or result.get("error")
                lines.append(f"| `chainrule train xor` | — ({reason}) | | |")
    return lines


def _targets_table(found: list[dict]) -> list[str]:
    lines = ["| target | measured | met |", "|---|---:|:---:|"]
    for target in found:
        value = target["measured"]
        if value is None:
            shown = "—"
        elif target["unit"] == "":
            shown = "yes" if target["met"] else "no"
        elif target["unit"] == "s":
            shown = f"{value:.3f} s"
        elif target["unit"] == "%":
            shown = f"{value:.1f}%"
        else:
            shown = f"{value:.2f}×"
        lines.append(f"| {target['target']} | {shown} | {_mark(target['met'])} |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The tables of one run: training speed, start-up, targets; with the GEMM rate they rest on."""
    gemm = result["gemm"]
    threads = result["threads"]
    header = (
        f"NumPy float32 GEMM rate: {gemm['gflops']:.1f} GFLOP/s ({gemm['n']}³ matmul, median of "
        f"{gemm['uncontended']} uncontended of {len(gemm['samples'])} samples, half before and "
        "half after the workloads; each row's % of the GEMM bound is taken against the same "
        "GEMM timed in the same rounds). "
        f"Threads: NumPy BLAS {threads['numpy_blas']}, PyTorch {threads['pytorch']}. "
        "Ratios and percentages are medians over rounds of within-round ratios."
    )
    lines = [
        header,
        "",
        *_training_table(result["workloads"]),
        "",
        *_startup_table(result["workloads"]),
        "",
        *_targets_table(result["targets"]),
    ]
    return "\n".join(lines) + "\n"
