#!/usr/bin/env python
"""fastlstm vs PyTorch (interleaved, A B A B ...) and ONNX Runtime (alternating blocks).

For each cell x mode x shape x thread count: the medians, the time ratio fastlstm/PyTorch
(< 1: fastlstm is faster), GFLOP/s (standard count) and the fraction of the machine's NumPy
float32 matmul peak at the same thread count. Absolute times on a shared machine drift; the
ratio of two peers timed side by side is the number to quote.

ONNX Runtime (``--peers onnxruntime``, the default when it is installed) is an inference peer:
forward rows only. Both it and fastlstm's OpenMP keep their worker threads spinning for a while
after a call, so calling them in turn would time each against the other's spinning threads.
They are timed in alternating blocks instead: a pause (``--pause``), one untimed call, then
``--block`` timed calls of one runtime; the same for the other; repeated (the first runtime
alternates) until each has ``--repeats`` timed calls. fastlstm/ORT is the ratio of the two
medians from these blocks; "per block": the median of the per-block-pair ratios.

    python bench/compare.py                                  # everything, 30 repeats
    python bench/compare.py --shapes seed --repeats 3        # a quick look
    python bench/compare.py --modes forward --peers onnxruntime --block 5   # vs ORT only
    python bench/compare.py --markdown --json compare.json   # the README table (+ raw data)
    python bench/report.py compare.json --markdown           # re-render a saved run
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional


import common  # noqa: E402

KIND = "fastlstm-compare"
PEERS = ("torch", "onnxruntime")


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
    p.add_argument("--peers", nargs="*", choices=PEERS, default=None,
                   help="peers to time fastlstm against (none: fastlstm alone); default: torch "
                        "and onnxruntime, each when installed")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out of the peers")
    p.add_argument("--block", type=_positive_int, default=5,
                   help="ONNX Runtime: timed calls of one runtime per block")
    p.add_argument("--pause", type=float, default=0.05,
                   help="ONNX Runtime: seconds of sleep before each block, for the other "
                        "runtime's threads to stop spinning")
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


def time_blocks(runners: Dict[str, Any], repeats: int, block: int, pause: float,
                warmup: int) -> tuple:
    """Time the runners in alternating blocks: sleep ``pause`` s, one untimed call, ``block``
    timed calls of one runner; then of the next; the runner going first alternates per round.

    Returns (every time per runner, the median of each block per runner, in round order).
    """
    names = list(runners)
    for _ in range(warmup):
        for fn in runners.values():
            fn()
    times: Dict[str, List[float]] = {name: [] for name in names}
    blocks: Dict[str, List[float]] = {name: [] for name in names}
    clock = time.perf_counter
    for r in range(math.ceil(repeats / block)):
        n = min(block, repeats - r * block)
        for name in (names if r % 2 == 0 else names[::-1]):
            fn = runners[name]
            time.sleep(pause)
            fn()  # untimed: wakes this runtime's threads after the pause
            these = []
            for _ in range(n):
                t0 = clock()
                fn()
                these.append(clock() - t0)
            times[name] += these
            blocks[name].append(statistics.median(these))
    return times, blocks


def _stats(times: List[float], n_flops: float, peak: Optional[dict]) -> Dict[str, Any]:
    med = statistics.median(times)
    gflops = n_flops / med / 1e9
    return dict(median_s=med, times_s=times, gflops=gflops,
                pct_peak=100.0 * gflops / peak["gflops"] if peak else None)


def run_case(cell: str, mode: str, shape: str, threads: int, args, peak: Optional[dict],
             with_torch: bool, with_ort: bool = False) -> Dict[str, Any]:
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
        ort = with_ort and mode in common.impl_modes("onnxruntime")
        if ort:
            checks["onnxruntime"] = common.check("onnxruntime", cell, shape, mode)
            blocked = {"fastlstm": runners["fastlstm"],
                       "onnxruntime": common.make_runner("onnxruntime", cell, mode, p, threads)}
            b_times, b_medians = time_blocks(blocked, args.repeats, args.block, args.pause,
                                             args.warmup)
            del blocked
    row["threads_set"] = set_to
    for impl in impls:
        row[impl] = dict(_stats(times[impl], n_flops, peak), **checks[impl].as_dict())
    if with_torch:
        row["ratio"] = row["fastlstm"]["median_s"] / row["torch"]["median_s"]
        row["paired_ratio"] = statistics.median(
            a / b for a, b in zip(times["fastlstm"], times["torch"]))
    if ort:
        # fastlstm's own times from the blocks: the ORT ratio compares like with like
        row["fastlstm_blocks"] = dict(_stats(b_times["fastlstm"], n_flops, peak),
                                      block_medians_s=b_medians["fastlstm"])
        row["onnxruntime"] = dict(_stats(b_times["onnxruntime"], n_flops, peak),
                                  block_medians_s=b_medians["onnxruntime"],
                                  **checks["onnxruntime"].as_dict())
        row["ratio_ort"] = row["fastlstm_blocks"]["median_s"] / row["onnxruntime"]["median_s"]
        row["block_ratio_ort"] = statistics.median(
            a / b for a, b in zip(b_medians["fastlstm"], b_medians["onnxruntime"]))
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
        + (f"ONNX Runtime {m['onnxruntime'] or 'not installed'}; " if "onnxruntime" in m else "")
        + f"NumPy {m['numpy']} (BLAS {m['blas']}); Python {m['python']}; {m['platform']}",
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
    if any(r.get("onnxruntime") for r in data["results"]):
        lines.append(f"ONNX Runtime vs fastlstm: alternating blocks of {data.get('block')} timed "
                     f"calls (each after a {data.get('pause')} s pause and one untimed call), "
                     f"{data['repeats']} timed calls each")
    return lines


def render(data: Dict[str, Any], markdown: bool = False) -> str:
    with_torch = any(r.get("torch") for r in data["results"])
    with_ort = any(r.get("onnxruntime") for r in data["results"])
    headers = ["cell", "mode", "shape (T,B,I,H)", "threads", "fastlstm ms"]
    if with_torch:
        headers += ["PyTorch ms", "fastlstm/PyTorch", "paired"]
    if with_ort:
        headers += ["fastlstm ms (blocks)", "ORT ms", "fastlstm/ORT", "per block"]
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
        ort = r.get("onnxruntime")
        if with_ort:
            row += [_fmt(1e3 * r["fastlstm_blocks"]["median_s"], ".3g") if ort else "n/a",
                    _fmt(1e3 * ort["median_s"], ".3g") if ort else "n/a",
                    _fmt(r.get("ratio_ort"), ".2f"), _fmt(r.get("block_ratio_ort"), ".2f")]
        row += [_fmt(fl["gflops"], ".1f"), _fmt(fl["pct_peak"], ".1f")]
        if with_torch:
            row += [_fmt(th["gflops"], ".1f") if th else "n/a",
                    _fmt(th["pct_peak"], ".1f") if th else "n/a"]
        ok = [("fastlstm", fl)] + ([("torch", th)] if th else []) + ([("onnxruntime", ort)] if ort else [])
        row.append("yes" if all(c["correct"] for _, c in ok) else
                   "NO: " + ", ".join(f"{n} {c['worst']} err {c['max_err']:.1e}"
                                      for n, c in ok if not c["correct"]))
        rows.append(row)
    head = header_lines(data)
    if markdown:
        head = [f"- {line}" for line in head]
    notes = ("fastlstm/PyTorch: ratio of the median times (< 1: fastlstm faster); paired: "
             "median of the per-pair ratios. " if with_torch else "")
    notes += ("fastlstm/ORT: ratio of the medians timed in alternating blocks (forward only; "
              "fastlstm ms (blocks) are fastlstm's times there); per block: median of the "
              "ratios of the two block medians of each round. " if with_ort else "")
    notes += ("GFLOP/s: forward 2*T*B*(I+H)*G*H (G = 4 LSTM, 3 GRU), train = 3x forward, "
              "float32; % peak: of the matmul peak at the same thread count. correct: each "
              "peer vs the float64 NumPy reference, checked once outside the timed calls.")
    return "\n".join(head + ["", common.format_table(headers, rows, markdown), "", notes])


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.pause < 0:
        build_parser().error("--pause must be >= 0")
    peers = list(PEERS) if args.peers is None else args.peers
    with_torch = "torch" in peers and common.use_torch(args.no_torch)
    with_ort = "onnxruntime" in peers and common.onnxruntime_available()
    if "onnxruntime" in (args.peers or []) and not with_ort:
        print("onnxruntime (or onnx) is not installed (pip install onnx onnxruntime): "
              "no ONNX Runtime peer", file=sys.stderr)
    machine = common.machine_info()  # after importing torch, so that its version shows
    if not with_torch:
        machine["torch"] = "not used"
    if not with_ort:
        machine["onnxruntime"] = "not used"
    peak: Dict[str, Any] = {}
    for n in args.threads:
        peak[str(n)] = common.matmul_peak(n, args.peak_size, args.peak_repeats)
    if any(not isinstance(v["blas_threads"], int) for v in peak.values()):
        print("note: threadpoolctl is not installed, so the matmul peak ran with NumPy's "
              "default BLAS threads, whatever --threads says", file=sys.stderr)
    data: Dict[str, Any] = dict(kind=KIND, command=" ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
                                machine=machine, peak=peak, repeats=args.repeats,
                                warmup=args.warmup, block=args.block, pause=args.pause,
                                results=[])
    for n, v in peak.items():
        print(f"matmul peak, {n} thread(s): {v['gflops']:.1f} GFLOP/s", file=sys.stderr)
    for cell in args.cells:
        for mode in args.modes:
            for shape in args.shapes:
                for n in args.threads:
                    t0 = time.perf_counter()
                    row = run_case(cell, mode, shape, n, args, peak[str(n)], with_torch,
                                   with_ort)
                    data["results"].append(row)
                    print(f"  {cell} {mode} {shape} t{n}: fastlstm "
                          f"{1e3 * row['fastlstm']['median_s']:.3g} ms"
                          + (f", PyTorch {1e3 * row['torch']['median_s']:.3g} ms, "
                             f"ratio {row['ratio']:.2f}" if with_torch else "")
                          + (f"; blocks: fastlstm {1e3 * row['fastlstm_blocks']['median_s']:.3g}"
                             f" ms, ORT {1e3 * row['onnxruntime']['median_s']:.3g} ms, ratio "
                             f"{row['ratio_ort']:.2f}" if row.get("onnxruntime") else "")
                          + f" ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    print(render(data, args.markdown))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
