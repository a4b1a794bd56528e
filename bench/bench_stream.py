"""Streaming latency: one step at B=1, I=28, H=128, float32, 1 thread.

fastlstm.LSTMStream.step (new array, and out=) and GRUStream.step next to fastlstm.lstm_cell /
gru_cell (checks, allocation and weight packing every call), torch.nn.LSTMCell / GRUCell
(torch.no_grad, 1 thread) and, for the kernel's own speed, fastlstm.lstm per step over a
long sequence.

    python bench/bench_stream.py                  # interleaved rounds, median us per step
    pytest bench/bench_stream.py --benchmark-only # the same peers under pytest-benchmark

Each peer's result is checked once against the stream's (fastlstm peers bitwise, torch
within float32 rounding) before anything is timed.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, Tuple

import numpy as np

import fastlstm
from common import CHECK_TOL

B, I, H = 1, 28, 128
T_SEQ = 1000  # steps of the sequence the "kernel" row divides by


def _weights(gates: int, rng) -> list:
    k = 1 / np.sqrt(H)
    return [rng.uniform(-k, k, s).astype(np.float32)
            for s in ((gates * H, I), (gates * H, H), (gates * H,), (gates * H,))]


def peers() -> Dict[str, Tuple[Callable[[], object], str]]:
    """name -> (one call, what it is); every fastlstm peer on 1 thread."""
    fastlstm.set_num_threads(1)
    rng = np.random.default_rng(0)
    wl, wg = _weights(4, rng), _weights(3, rng)
    x = rng.standard_normal((B, I)).astype(np.float32)
    h = rng.standard_normal((B, H)).astype(np.float32) * 0.1
    c = rng.standard_normal((B, H)).astype(np.float32) * 0.1
    ls, gs = fastlstm.LSTMStream(*wl), fastlstm.GRUStream(*wg)
    out = np.empty((B, H), np.float32)
    xs = rng.standard_normal((T_SEQ, B, I)).astype(np.float32)

    # checks: one step from (h, c) by each peer
    ls.reset(h, c)
    want = ls.step(x)
    assert np.array_equal(fastlstm.lstm_cell(x, h, c, *wl)[0], want)
    gs.reset(h)
    want_g = gs.step(x)
    assert np.array_equal(fastlstm.gru_cell(x, h, *wg), want_g)

    p: Dict[str, Tuple[Callable[[], object], str]] = {
        "LSTMStream.step": (lambda: ls.step(x), "fastlstm, new (B, H) array per step"),
        "LSTMStream.step(out=)": (lambda: ls.step(x, out=out), "fastlstm, no allocation"),
        "fastlstm.lstm_cell": (lambda: fastlstm.lstm_cell(x, h, c, *wl),
                               "fastlstm, validates and packs every call"),
        "GRUStream.step": (lambda: gs.step(x), "fastlstm, new array per step"),
        "fastlstm.gru_cell": (lambda: fastlstm.gru_cell(x, h, *wg), "fastlstm, every call"),
        f"fastlstm.lstm T={T_SEQ} (per step)": (
            lambda: fastlstm.lstm(xs, *wl, training=False), "the sequence kernel's step"),
    }
    try:
        import torch
    except ImportError:
        return p
    torch.set_num_threads(1)
    cell = torch.nn.LSTMCell(I, H)
    gcell = torch.nn.GRUCell(I, H)
    with torch.no_grad():
        for mod, w in ((cell, wl), (gcell, wg)):
            for name, a in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), w):
                getattr(mod, name).copy_(torch.from_numpy(a))
        tx, th, tc = torch.from_numpy(x), torch.from_numpy(h), torch.from_numpy(c)
        np.testing.assert_allclose(cell(tx, (th, tc))[0].numpy(), want, **CHECK_TOL)
        np.testing.assert_allclose(gcell(tx, th).numpy(), want_g, **CHECK_TOL)

    def torch_lstm():
        with torch.no_grad():
            return cell(tx, (th, tc))

    def torch_gru():
        with torch.no_grad():
            return gcell(tx, th)

    p["torch nn.LSTMCell"] = (torch_lstm, f"torch {torch.__version__}, no_grad, 1 thread")
    p["torch nn.GRUCell"] = (torch_gru, f"torch {torch.__version__}, no_grad, 1 thread")
    return p


def _per_step(name: str) -> int:
    return T_SEQ if name.startswith("fastlstm.lstm T=") else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--seconds", type=float, default=0.02, help="per peer per round")
    args = ap.parse_args()
    p = peers()
    calls = {}
    for name, (f, _) in p.items():  # calls per round: about --seconds each
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < args.seconds / 4:
            f()
            n += 1
        calls[name] = max(1, int(n * 4))
    times: Dict[str, list] = {name: [] for name in p}
    for _ in range(args.rounds):  # interleaved, so that a busy moment hits every peer
        for name, (f, _) in p.items():
            n = calls[name]
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            times[name].append((time.perf_counter() - t0) / n / _per_step(name) * 1e6)
    print(f"B={B} I={I} H={H} float32, 1 thread, isa {fastlstm.isa()}, "
          f"median (min) us per step over {args.rounds} interleaved rounds")
    print("| peer | us per step | min | |")
    print("| --- | ---: | ---: | --- |")
    for name, (_, what) in p.items():
        t = times[name]
        print(f"| {name} | {statistics.median(t):.2f} | {min(t):.2f} | {what} |")


# ---------------------------------------------------------------------- pytest-benchmark
try:
    import pytest
except ImportError:  # the script needs no pytest
    pytest = None

if pytest is not None:
    _NAMES = ("LSTMStream.step", "LSTMStream.step(out=)", "fastlstm.lstm_cell",
              "torch nn.LSTMCell", "GRUStream.step", "fastlstm.gru_cell", "torch nn.GRUCell")

    @pytest.mark.parametrize("impl", _NAMES)
    def test_stream_step(benchmark, impl):
        try:
            p = peers()  # sets 1 thread for the fastlstm peers
            if impl not in p:
                pytest.skip("torch is not installed")
            benchmark.group = f"one step B={B} I={I} H={H} float32, 1 thread"
            benchmark.extra_info["isa"] = fastlstm.isa()
            benchmark(p[impl][0])
        finally:
            fastlstm.set_num_threads(None)


if __name__ == "__main__":
    main()
