#!/usr/bin/env python
"""fastlstm vs PyTorch, timed interleaved (A B A B ...) in one process.

For each cell x mode x shape x thread count: both medians, the time ratio fastlstm/PyTorch
(< 1: fastlstm is faster), GFLOP/s (standard count) and the fraction of the machine's NumPy
float32 matmul peak at the same thread count. Absolute times on a shared machine drift; the
ratio of two peers timed side by side is the number to quote.

    python bench/compare.py                                  # everything, 30 repeats
    python bench/compare.py --shapes seed --repeats 3        # a quick look
    python bench/compare.py --markdown --json compare.json   # the README table (+ raw data)
    python bench/report.py compare.json --markdown           # re-render a saved run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional


import common  # noqa: E402

KIND = "fastlstm-compare"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shapes", nargs="+", choices=list(common.SHAPES), default=list(common.SHAPES))
    p.add_argument("--cells", nargs="+", choices=common.CELLS, default=list(common.CELLS))
    p.add_argument("--modes", nargs="+", choices=common.MODES, default=list(common.MODES))
    p.add_argument("--threads", nargs="+", type=_positive_int, default=list(common.THREADS))
    p.add_argument("--repeats", type=_positive_int, default=30,
                   help="timed calls of each peer (interleaved)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls of each peer first")
    p.add_argument("--peak-size", type=_positive_int, default=2048,
                   help="n of the n x n float32 matmul that measures the peak")
    p.add_argument("--peak-repeats", type=_positive_int, default=5,
                   help="the peak is the best of this many matmuls")
    p.add_argument("--no-torch", action="store_true", help="time fastlstm alone")
    p.add_argument("--json", metavar="PATH", help="also write every time and setting as JSON")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    return p


def time_interleaved(runners: Dict[str, Any], repeats: int, warmup: int) -> Dict[str, List[float]]:
    """Call the runners in turn (A B A B ...), ``warmup`` untimed rounds first."""
    for _ in range(warmup):
        for fn in runners.values():
            fn()
    times: Dict[str, List[float]] = {name: [] for name in runners}
    clock = time.perf_counter
    for _ in range(repeats):
        for name, fn in runners.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return times


def run_case(cell: str, mode: str, shape: str, threads: int, args, peak: Optional[dict],
             with_torch: bool) -> Dict[str, Any]:
    impls = ["fastlstm"] + (["torch"] if with_torch else [])
    n_flops = common.flops(cell, shape, mode)
    T, B, I, H = common.SHAPES[shape]
    p = common.problem(cell, shape)
    row: Dict[str, Any] = dict(cell=cell, mode=mode, shape=shape, T=T, B=B, I=I, H=H,
                               threads=threads, flops=n_flops)
    with common.thread_count(threads) as set_to:
        checks = {impl: common.check(impl, cell, shape, mode) for impl in impls}
        runners = {impl: common.make_runner(impl, cell, mode, p) for impl in impls}
        times = time_interleaved(runners, args.repeats, args.warmup)
    row["threads_set"] = set_to
    for impl in impls:
        med = statistics.median(times[impl])
        gflops = n_flops / med / 1e9
        row[impl] = dict(median_s=med, times_s=times[impl], gflops=gflops,
                         pct_peak=100.0 * gflops / peak["gflops"] if peak else None,
                         **checks[impl].as_dict())
    if with_torch:
        row["ratio"] = row["fastlstm"]["median_s"] / row["torch"]["median_s"]
        row["paired_ratio"] = statistics.median(
            a / b for a, b in zip(times["fastlstm"], times["torch"]))
    return row


# ----------------------------------------------------------------------------------------------
# Output (also used by report.py)
# ----------------------------------------------------------------------------------------------

def _fmt(x: Optional[float], spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def header_lines(data: Dict[str, Any]) -> List[str]:
    m = data["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores ({m['cores_available']} available to this "
        f"process), flags {' '.join(m['cpu_flags']) or '?'}; load average at start "
        f"{' '.join(map(str, m['load_average'] or []))}",
        f"fastlstm {m['fastlstm']} (ISA {m['fastlstm_isa']}, OpenMP "
        f"{'on' if m['fastlstm_openmp'] else 'off'}); PyTorch {m['torch'] or 'not installed'}; "
        f"NumPy {m['numpy']} (BLAS {m['blas']}); Python {m['python']}; {m['platform']}",
    ]
    peaks = data.get("peak") or {}
    if peaks:
        lines.append("matmul peak (NumPy float32 {n}x{n}, best of {r}): ".format(
            n=next(iter(peaks.values()))["n"], r=next(iter(peaks.values()))["repeats"])
            + ", ".join(f"{t} thread{'s' if int(t) > 1 else ''} {v['gflops']:.1f} GFLOP/s"
                        f"{'' if isinstance(v['blas_threads'], int) else ' (BLAS threads ' + v['blas_threads'] + ')'}"
                        for t, v in peaks.items()))
    lines.append(f"{data['repeats']} interleaved repeats after {data['warmup']} warm-up calls; "
                 f"medians; {m['date']}; command: {data['command']}")
    return lines


def render(data: Dict[str, Any], markdown: bool = False) -> str:
    with_torch = any(r.get("torch") for r in data["results"])
    headers = ["cell", "mode", "shape (T,B,I,H)", "threads", "fastlstm ms"]
    if with_torch:
        headers += ["PyTorch ms", "fastlstm/PyTorch", "paired"]
    headers += ["fastlstm GFLOP/s", "fastlstm % peak"]
    if with_torch:
        headers += ["PyTorch GFLOP/s", "PyTorch % peak"]
    headers += ["correct"]
    rows = []
    for r in data["results"]:
        fl, th = r["fastlstm"], r.get("torch")
        row = [r["cell"], r["mode"], common.shape_label(r["shape"]), r["threads"],
               _fmt(1e3 * fl["median_s"], ".3g")]
        if with_torch:
            row += [_fmt(1e3 * th["median_s"], ".3g") if th else "n/a",
                    _fmt(r.get("ratio"), ".2f"), _fmt(r.get("paired_ratio"), ".2f")]
        row += [_fmt(fl["gflops"], ".1f"), _fmt(fl["pct_peak"], ".1f")]
        if with_torch:
            row += [_fmt(th["gflops"], ".1f") if th else "n/a",
                    _fmt(th["pct_peak"], ".1f") if th else "n/a"]
        ok = [("fastlstm", fl)] + ([("torch", th)] if th else [])
        row.append("yes" if all(c["correct"] for _, c in ok) else
                   "NO: " + ", ".join(f"{n} {c['worst']} err {c['max_err']:.1e}"
                                      for n, c in ok if not c["correct"]))
        rows.append(row)
    head = header_lines(data)
    if markdown:
        head = [f"- {line}" for line in head]
    notes = ("fastlstm/PyTorch: ratio of the median times (< 1: fastlstm faster); paired: "
             "median of the per-pair ratios. " if with_torch else "")
    notes += ("GFLOP/s: forward 2*T*B*(I+H)*G*H (G = 4 LSTM, 3 GRU), train = 3x forward, "
              "float32; % peak: of the matmul peak at the same thread count. correct: each "
              "peer vs the float64 NumPy reference, checked once outside the timed calls.")
    return "\n".join(head + ["", common.format_table(headers, rows, markdown), "", notes])


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    with_torch = common.use_torch(args.no_torch)
    machine = common.machine_info()  # after importing torch, so that its version shows
    if not with_torch:
        machine["torch"] = "not used"
    peak: Dict[str, Any] = {}
    for n in args.threads:
        peak[str(n)] = common.matmul_peak(n, args.peak_size, args.peak_repeats)
    if any(not isinstance(v["blas_threads"], int) for v in peak.values()):
        print("note: threadpoolctl is not installed, so the matmul peak ran with NumPy's "
              "default BLAS threads, whatever --threads says", file=sys.stderr)
    data: Dict[str, Any] = dict(kind=KIND, command=" ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
                                machine=machine, peak=peak, repeats=args.repeats,
                                warmup=args.warmup, results=[])
    for n, v in peak.items():
        print(f"matmul peak, {n} thread(s): {v['gflops']:.1f} GFLOP/s", file=sys.stderr)
    for cell in args.cells:
        for mode in args.modes:
            for shape in args.shapes:
                for n in args.threads:
                    t0 = time.perf_counter()
                    row = run_case(cell, mode, shape, n, args, peak[str(n)], with_torch)
                    data["results"].append(row)
                    print(f"  {cell} {mode} {shape} t{n}: fastlstm "
                          f"{1e3 * row['fastlstm']['median_s']:.3g} ms"
                          + (f", PyTorch {1e3 * row['torch']['median_s']:.3g} ms, "
                             f"ratio {row['ratio']:.2f}" if with_torch else "")
                          + f" ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    print(render(data, args.markdown))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
