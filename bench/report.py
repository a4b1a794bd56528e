#!/usr/bin/env python
"""Print the ratios the README quotes from a saved benchmark run.

Reads either pytest-benchmark's JSON::

    pytest bench --benchmark-only --benchmark-json=bench.json
    python bench/report.py bench.json [--markdown]

(one row per cell x mode x shape x threads: each peer's median, fastlstm/peer time ratios,
GFLOP/s, % of the NumPy matmul peak from ``bench_gemm.py`` when it ran, the correctness
check), or the JSON written by ``compare.py --json`` (re-rendered as compare.py prints it).
The machine and the command come from the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional


import common  # noqa: E402

PEERS = ("numpy_ref", "torch", "onnxruntime")


def _ms(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{1e3 * x:.3g}"


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return "n/a" if a is None or b is None else f"{a / b:.2f}"


def render_pytest(data: Dict[str, Any], markdown: bool = False) -> str:
    peaks: Dict[int, float] = {}
    cases: Dict[tuple, Dict[str, Dict[str, Any]]] = {}
    for b in data["benchmarks"]:
        info, median = b.get("extra_info", {}), b["stats"]["median"]
        if info.get("impl") == "numpy" and "flops" in info:  # bench_gemm.py
            peaks[info["n_threads"]] = info["flops"] / b["stats"]["min"] / 1e9  # best, as compare.py
        elif "cell" in info:
            key = (info["cell"], info["mode"], info["shape"], info["n_threads"])
            cases.setdefault(key, {})[info["impl"]] = dict(info, median=median)
    order = {name: i for i, name in enumerate(common.SHAPES)}
    rows = []
    for key in sorted(cases, key=lambda k: (common.CELLS.index(k[0]), common.MODES.index(k[1]),
                                             order.get(k[2], 99), k[3])):
        cell, mode, shape, threads = key
        peers = cases[key]
        fl = peers.get("fastlstm", {})
        med = {impl: peers.get(impl, {}).get("median") for impl in ("fastlstm",) + PEERS}
        gflops = fl.get("gflops")
        peak = peaks.get(threads)
        bad = [f"{impl} ({p.get('worst')} err {p.get('max_err', float('nan')):.1e})"
               for impl, p in peers.items() if p.get("correct") is False]
        rows.append([cell, mode, common.shape_label(shape), threads, _ms(med["fastlstm"]),
                     _ms(med["numpy_ref"]), _ms(med["torch"]), _ms(med["onnxruntime"]),
                     _ratio(med["fastlstm"], med["numpy_ref"]), _ratio(med["fastlstm"], med["torch"]),
                     _ratio(med["fastlstm"], med["onnxruntime"]),
                     "n/a" if gflops is None else f"{gflops:.1f}",
                     "n/a" if gflops is None or not peak else f"{100 * gflops / peak:.1f}",
                     "NO: " + ", ".join(bad) if bad else "yes"])
    headers = ["cell", "mode", "shape (T,B,I,H)", "threads", "fastlstm ms", "NumPy ref ms",
               "PyTorch ms", "ORT ms", "fastlstm/NumPy ref", "fastlstm/PyTorch", "fastlstm/ORT",
               "fastlstm GFLOP/s",
               "fastlstm % peak", "correct"]
    m = data.get("machine_info", {}).get("fastlstm_bench")
    head = []
    if m:
        head.append(f"machine: {m['cpu']}, {m['cores']} cores ({m['cores_available']} available), "
                    f"load average {' '.join(map(str, m['load_average'] or []))}; fastlstm "
                    f"{m['fastlstm']} (ISA {m['fastlstm_isa']}, OpenMP "
                    f"{'on' if m['fastlstm_openmp'] else 'off'}); PyTorch "
                    f"{m['torch'] or 'not installed'}; "
                    + (f"ONNX Runtime {m['onnxruntime'] or 'not installed'}; " if "onnxruntime" in m else "")
                    + f"NumPy {m['numpy']} (BLAS {m['blas']})")
    if peaks:
        head.append("matmul peak (bench_gemm.py, NumPy float32 2048^3, fastest round): " + ", ".join(
            f"{t} thread(s) {g:.1f} GFLOP/s" for t, g in sorted(peaks.items())))
    head.append(f"pytest-benchmark medians; {data.get('datetime', '')}; command: "
                f"{data.get('command', '?')}")
    if markdown:
        head = [f"- {line}" for line in head]
    notes = ("ratios are of median times (< 1: fastlstm faster). The NumPy reference computes "
             "in float64 and is skipped at the long shape; ONNX Runtime (ORT) runs forward "
             "rows only. correct: every peer in the row vs the "
             "float64 reference, checked once outside the timed calls.")
    return "\n".join(head + ["", common.format_table(headers, rows, markdown), "", notes])


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", help="pytest-benchmark --benchmark-json output, or compare.py --json")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    with open(args.json, encoding="utf-8") as f:
        data = json.load(f)
    if data.get("kind") == "fastlstm-compare":
        from compare import render

        print(render(data, args.markdown))
    elif "benchmarks" in data:
        print(render_pytest(data, args.markdown))
    else:
        print(f"{args.json}: neither a pytest-benchmark JSON nor a compare.py --json file",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
