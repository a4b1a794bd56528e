#!/usr/bin/env python
"""The extended LSTM vs PyTorch, timed interleaved (A B A B ...) in one process, float32.

* **proj**: ``fastlstm.lstm(..., weight_hr=...)`` vs ``torch.nn.LSTM(I, H, proj_size=P)``
  (cuDNN-free CPU path, same weights).
* **layernorm**: ``fastlstm.lstm(..., ln_gain_ih=..., ...)`` (haste's LayerNormLSTM) vs the
  same equations written the usual way in torch: ``nn.LayerNorm`` modules and a Python loop
  over the time steps (torch has no fused layer-norm LSTM).

* **proj-dropin**: the drop-in ``fastlstm.torch.LSTM(I, H, proj_size=P)`` vs
  ``torch.nn.LSTM(I, H, proj_size=P)`` (same state_dict), both as torch modules: a train step
  is ``zero_grad``, forward, ``backward(dy)`` through autograd.
* **dropout-layer**: ``fastlstm.LSTM(I, H, 2, dropout=0.3)`` (the NumPy layer: forward, then
  backward) vs ``torch.nn.LSTM(I, H, 2, dropout=0.3)`` (dropout between the two layers).
* **dropout-dropin**: ``fastlstm.torch.LSTM(I, H, 2, dropout=0.3)`` vs the same nn.LSTM.
  The dropout kinds run in train mode only (inference applies no dropout); P is unused.

Modes: **forward** (no gradient bookkeeping: ``training=False``, ``torch.no_grad()``) and
**train** (forward, then backward from a random ``dy`` on the output into x and every
parameter). Prints both medians and the ratio fastlstm/torch (< 1: fastlstm is faster);
quote the ratio, absolute times on a shared machine drift.

    python bench/compare_extensions.py                       # every case, 20 repeats
    python bench/compare_extensions.py --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict

import numpy as np

import fastlstm

SHAPES: Dict[str, tuple] = {          # T, B, I, H, P
    "seed": (28, 128, 28, 128, 64),
    "long": (100, 64, 64, 256, 128),
}


def make_params(T: int, B: int, I: int, H: int, P: int, kind: str, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    k = 1 / np.sqrt(H)
    R = P if kind == "proj" else H
    u = lambda *s: rng.uniform(-k, k, s).astype(np.float32)  # noqa: E731
    p = dict(x=rng.uniform(-1, 1, (T, B, I)).astype(np.float32), weight_ih=u(4 * H, I),
             weight_hh=u(4 * H, R), bias_ih=u(4 * H), bias_hh=u(4 * H))
    if kind == "proj":
        p["weight_hr"] = u(P, H)
    else:
        p.update(ln_gain_ih=np.ones(4 * H, np.float32), ln_gain_hh=np.ones(4 * H, np.float32),
                 ln_gain_c=np.ones(H, np.float32), ln_bias_c=np.zeros(H, np.float32))
    return p


def torch_peer(torch, p: dict, kind: str):
    """(module, run(x) -> output) holding the same parameters as p."""
    nn = torch.nn
    T, B, I = p["x"].shape
    H = p["weight_ih"].shape[0] // 4
    if kind == "proj":
        m = nn.LSTM(I, H, proj_size=p["weight_hr"].shape[0])
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"):
                getattr(m, name + "_l0").copy_(torch.from_numpy(p[name]))
        return m, lambda x: m(x)[0]

    class LayerNormLSTM(nn.Module):
        """haste's LayerNormLSTM the usual way: nn.LayerNorm and a Python time loop."""

        def __init__(self):
            super().__init__()
            self.ih = nn.Linear(I, 4 * H, bias=False)
            self.hh = nn.Linear(H, 4 * H, bias=False)
            self.bias = nn.Parameter(torch.from_numpy(p["bias_ih"] + p["bias_hh"]))
            self.ln_ih = nn.LayerNorm(4 * H, bias=False)
            self.ln_hh = nn.LayerNorm(4 * H, bias=False)
            self.ln_c = nn.LayerNorm(H)
            with torch.no_grad():
                self.ih.weight.copy_(torch.from_numpy(p["weight_ih"]))
                self.hh.weight.copy_(torch.from_numpy(p["weight_hh"]))

        def forward(self, x):
            h = x.new_zeros(x.shape[1], H)
            c = x.new_zeros(x.shape[1], H)
            a_x = self.ln_ih(self.ih(x))          # the input side for all steps at once
            ys = []
            for t in range(x.shape[0]):
                i, f, g, o = (a_x[t] + self.ln_hh(self.hh(h)) + self.bias).chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(self.ln_c(c))
                ys.append(h)
            return torch.stack(ys)

    m = LayerNormLSTM()
    return m, m


def module_runners(torch, p: dict, kind: str, mode: str) -> Dict[str, Callable[[], None]]:
    """The kinds whose torch side is ``nn.LSTM``: proj-dropin, dropout-layer, dropout-dropin
    (float32, same weights on both sides, module in train mode)."""
    import fastlstm.torch as ft
    nn = torch.nn
    T, B, I = p["x"].shape
    H = p["weight_ih"].shape[0] // 4
    kw = dict(proj_size=p["weight_hr"].shape[0]) if kind == "proj-dropin" else \
        dict(num_layers=2, dropout=0.3)
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, **kw)
    R = kw.get("proj_size") or H
    x = torch.from_numpy(p["x"])
    dy = np.random.default_rng(1).standard_normal((T, B, R)).astype(np.float32)
    dy_t = torch.from_numpy(dy)

    def torch_step(m):
        if mode == "forward":
            with torch.no_grad():
                m(x)
        else:
            m.zero_grad(set_to_none=True)
            xx = x.clone().requires_grad_(True)
            m(xx)[0].backward(dy_t)

    if kind == "dropout-layer":
        layer = fastlstm.LSTM(I, H, 2, dropout=0.3, seed=0)
        layer.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})

        def fl():
            out, _ = layer.forward(p["x"], training=mode == "train")
            if mode == "train":
                layer.backward(dy)
    else:
        fast = ft.LSTM(I, H, **kw)
        fast.load_state_dict(ref.state_dict())
        assert fast.fastlstm_unsupported(x) is None, "the drop-in would fall back to torch"

        def fl():
            torch_step(fast)
    return {"fastlstm": fl, "torch": lambda: torch_step(ref)}


def runners(torch, p: dict, kind: str, mode: str) -> Dict[str, Callable[[], None]]:
    if kind not in ("proj", "layernorm"):
        return module_runners(torch, p, kind, mode)
    ext = {k: v for k, v in p.items() if k not in ("x", "weight_ih", "weight_hh", "bias_ih",
                                                  "bias_hh")}
    base = (p["x"], p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"])
    m, run = torch_peer(torch, p, kind)
    x = torch.from_numpy(p["x"])
    R = p["weight_hh"].shape[1]
    dy = np.random.default_rng(1).standard_normal(p["x"].shape[:2] + (R,)).astype(np.float32)
    dy_t = torch.from_numpy(dy)
    if mode == "forward":
        def fl():
            fastlstm.lstm(*base, training=False, **ext)

        def th():
            with torch.no_grad():
                run(x)
    else:
        def fl():
            fastlstm.lstm(*base, **ext).backward(grad_output=dy)

        def th():
            m.zero_grad(set_to_none=True)
            xx = x.clone().requires_grad_(True)
            run(xx).backward(dy_t)
    return {"fastlstm": fl, "torch": th}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    kinds = ("proj", "layernorm", "proj-dropin", "dropout-layer", "dropout-dropin")
    ap.add_argument("--kinds", nargs="+", choices=kinds, default=list(kinds))
    ap.add_argument("--modes", nargs="+", choices=("forward", "train"),
                    default=["forward", "train"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args(argv)
    import torch
    old = (fastlstm.get_num_threads(), torch.get_num_threads())
    print("| kind | shape (T,B,I,H,P) | mode | threads | fastlstm ms | torch ms | ratio |")
    print("|---|---|---|---|---|---|---|")
    try:
        for kind in args.kinds:
            for shape in args.shapes:
                p = make_params(*SHAPES[shape], "layernorm" if kind == "layernorm" else "proj")
                for mode in args.modes:
                    if kind.startswith("dropout") and mode == "forward":
                        continue  # no dropout in inference: that is the plain 2-layer LSTM
                    fns = runners(torch, p, kind, mode)
                    for n in args.threads:
                        fastlstm.set_num_threads(n)
                        torch.set_num_threads(n)
                        times = {k: [] for k in fns}
                        for r in range(args.warmup + args.repeats):
                            for name, fn in fns.items():      # interleaved
                                t0 = time.perf_counter()
                                fn()
                                if r >= args.warmup:
                                    times[name].append(time.perf_counter() - t0)
                        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
                        print(f"| {kind} | {shape} {SHAPES[shape]} | {mode} | {n} | "
                              f"{med['fastlstm']:.2f} | {med['torch']:.2f} | "
                              f"{med['fastlstm'] / med['torch']:.2f} |", flush=True)
    finally:
        fastlstm.set_num_threads(old[0])
        torch.set_num_threads(old[1])


if __name__ == "__main__":
    main()
