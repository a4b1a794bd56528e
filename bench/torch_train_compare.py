#!/usr/bin/env python
"""A PyTorch training step with nn.LSTM/nn.GRU vs fastlstm.torch.LSTM/GRU, interleaved, in one
process.

The model is the recurrent layer (batch_first, one layer) + ``nn.Linear(H, 10)`` on the last
step's output, cross-entropy, ``torch.optim.Adam(lr=1e-3)``; a step is ``zero_grad``, forward,
``loss.backward()``, ``opt.step()`` and ``loss.item()``. Both models start from the same weights
and see the same batches (8 fixed random batches, cycled), so their loss curves must agree; the
largest relative difference of the losses is reported. Steps alternate A B B A ... so that
neither side always runs right after the other; the time ratio is fastlstm/torch (< 1: the
fastlstm module is faster), from the medians, and the spread is the 10th-90th percentile of the
per-pair ratios.

    python bench/torch_train_compare.py --markdown                 # seed and long, LSTM and GRU
    python bench/torch_train_compare.py --shapes seed --repeats 10 # a quick look
    python bench/torch_train_compare.py --json out.json            # every time, for later
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from typing import Dict, List

import torch
from torch import nn

import fastlstm
import fastlstm.torch as ft

SHAPES = {"seed": (28, 128, 28, 128), "long": (200, 64, 64, 256)}  # T, B, I, H
CLASSES = 10


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    p.add_argument("--cells", nargs="+", choices=["lstm", "gru"], default=["lstm", "gru"])
    p.add_argument("--threads", type=int, default=2,
                   help="torch.set_num_threads for the run (the fastlstm module follows it)")
    p.add_argument("--repeats", type=int, default=40, help="timed steps of each model")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps of each model first")
    p.add_argument("--json", metavar="PATH", help="also write every time as JSON")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    return p


class Trainer:
    def __init__(self, rnn: nn.Module, head: nn.Module, batches):
        self.rnn, self.head, self.batches = rnn, head, batches
        self.opt = torch.optim.Adam(list(rnn.parameters()) + list(head.parameters()), lr=1e-3)
        self.k = 0
        self.losses: List[float] = []

    def step(self) -> float:
        x, y = self.batches[self.k % len(self.batches)]
        self.k += 1
        self.opt.zero_grad()
        out, _ = self.rnn(x)
        loss = nn.functional.cross_entropy(self.head(out[:, -1]), y)
        loss.backward()
        self.opt.step()
        value = loss.item()
        self.losses.append(value)
        return value


def make_pair(cell: str, shape: str):
    T, B, I, H = SHAPES[shape]
    torch_cls, fast_cls = (nn.LSTM, ft.LSTM) if cell == "lstm" else (nn.GRU, ft.GRU)
    torch.manual_seed(0)
    ref_rnn, ref_head = torch_cls(I, H, batch_first=True), nn.Linear(H, CLASSES)
    fast_rnn, fast_head = fast_cls(I, H, batch_first=True), nn.Linear(H, CLASSES)
    fast_rnn.load_state_dict(ref_rnn.state_dict())
    fast_head.load_state_dict(ref_head.state_dict())
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(B, T, I, generator=gen), torch.randint(0, CLASSES, (B,), generator=gen))
               for _ in range(8)]
    assert fast_rnn.fastlstm_unsupported(batches[0][0]) is None
    return {"torch": Trainer(ref_rnn, ref_head, batches),
            "fastlstm": Trainer(fast_rnn, fast_head, batches)}


def percentile(xs: List[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def measure(cell: str, shape: str, repeats: int, warmup: int) -> Dict:
    trainers = make_pair(cell, shape)
    for _ in range(warmup):
        for t in trainers.values():
            t.step()
    times: Dict[str, List[float]] = {"torch": [], "fastlstm": []}
    order = ["torch", "fastlstm"]
    for r in range(repeats):
        for name in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            trainers[name].step()
            times[name].append(time.perf_counter() - t0)
    a, b = trainers["torch"].losses, trainers["fastlstm"].losses
    loss_diff = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b))
    pair_ratios = [f / t for f, t in zip(times["fastlstm"], times["torch"])]
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"cell": cell, "shape": shape, "times": times, "median": med,
            "ratio": med["fastlstm"] / med["torch"],
            "ratio_p10": percentile(pair_ratios, 0.1), "ratio_p90": percentile(pair_ratios, 0.9),
            "loss_first": a[0], "loss_last": a[-1], "loss_max_rel_diff": loss_diff}


def label(shape: str) -> str:
    return f"{shape} ({','.join(map(str, SHAPES[shape]))})"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        rows = [measure(c, s, args.repeats, args.warmup) for s in args.shapes for c in args.cells]
    finally:
        torch.set_num_threads(old_threads)
    head = ("cell", "shape (T,B,I,H)", "nn step ms", "fastlstm.torch step ms",
            "ratio", "ratio p10-p90", "loss max rel diff")
    lines = []
    for r in rows:
        lines.append((r["cell"].upper(), label(r["shape"]), f"{r['median']['torch'] * 1e3:.1f}",
                      f"{r['median']['fastlstm'] * 1e3:.1f}", f"{r['ratio']:.2f}",
                      f"{r['ratio_p10']:.2f}-{r['ratio_p90']:.2f}",
                      f"{r['loss_max_rel_diff']:.1e}"))
    info = (f"torch {torch.__version__}, fastlstm {fastlstm.__version__} ({fastlstm.isa()}), "
            f"{args.threads} threads, {args.repeats} interleaved steps each, "
            f"{platform.processor() or platform.machine()}")
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for line in lines:
            print("| " + " | ".join(line) + " |")
        print(f"\n{info}")
    else:
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
        print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
        for line in lines:
            print("  ".join(v.ljust(w) for v, w in zip(line, widths)))
        print(info)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "info": info, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
