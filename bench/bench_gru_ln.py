"""Layer-norm GRU (haste's LayerNormGRU semantics, optionally with a recurrent dropout mask):
fastlstm's fused kernel vs the usual torch module (nn.Linear + nn.LayerNorm, Python time loop),
float32, forward and train step (forward + backward), 2 threads each.

    pytest bench/bench_gru_ln.py --benchmark-only        (pytest-benchmark table)
    python bench/bench_gru_ln.py [--threads 2] [--reps 7]  (the two interleaved in one process:
                                                            medians and ratios, the numbers to quote)
"""
from __future__ import annotations

import time
from typing import Callable, Dict

import numpy as np
import pytest

import fastlstm

SHAPES: Dict[str, tuple] = {"seed": (28, 128, 28, 128), "long": (100, 64, 64, 256)}
THREADS = 2
P_DROP = 0.25


def problem(shape: str, masked: bool, seed: int = 0) -> dict:
    T, B, I, H = SHAPES[shape]
    rng = np.random.default_rng(seed)
    k = 1 / np.sqrt(H)

    def u(lo, hi, *s):
        return rng.uniform(lo, hi, size=s).astype(np.float32)

    p = dict(x=u(-1, 1, T, B, I), weight_ih=u(-k, k, 3 * H, I), weight_hh=u(-k, k, 3 * H, H),
             bias_ih=u(-k, k, 3 * H), bias_hh=u(-k, k, 3 * H), h0=u(-0.5, 0.5, B, H),
             ln_gain_ih=u(0.5, 1.5, 3 * H), ln_gain_hh=u(0.5, 1.5, 3 * H))
    if masked:
        p["recurrent_mask"] = ((rng.random((B, H)) >= P_DROP) / (1 - P_DROP)).astype(np.float32)
    p["grad_output"] = rng.standard_normal((T, B, H)).astype(np.float32)
    return p


def fastlstm_step(p: dict, train: bool) -> Callable[[], None]:
    args = {k: v for k, v in p.items() if k != "grad_output"}

    def step():
        out = fastlstm.gru(**args, training=train)
        if train:
            out.backward(grad_output=p["grad_output"])
    return step


def torch_module(p: dict):
    """The usual torch LayerNorm-GRU: LN(W_ih x) hoisted over all steps, then a Python loop
    with LN(W_hh (m*h)) per step; nn.LayerNorm's weight is the gain, its bias the GRU bias."""
    import torch
    from torch import nn

    class LayerNormGRU(nn.Module):
        def __init__(self):
            super().__init__()
            H3, I = p["weight_ih"].shape
            self.w_ih = nn.Linear(I, H3, bias=False)
            self.w_hh = nn.Linear(H3 // 3, H3, bias=False)
            self.ln_ih, self.ln_hh = nn.LayerNorm(H3, eps=1e-5), nn.LayerNorm(H3, eps=1e-5)
            with torch.no_grad():
                for mod, name in ((self.w_ih, "weight_ih"), (self.w_hh, "weight_hh")):
                    mod.weight.copy_(torch.from_numpy(p[name]))
                for ln, side in ((self.ln_ih, "ih"), (self.ln_hh, "hh")):
                    ln.weight.copy_(torch.from_numpy(p["ln_gain_" + side]))
                    ln.bias.copy_(torch.from_numpy(p["bias_" + side]))

        def forward(self, x, h, mask=None):
            gx = self.ln_ih(self.w_ih(x))
            outs = []
            for t in range(x.shape[0]):
                gh = self.ln_hh(self.w_hh(h * mask if mask is not None else h))
                xr, xz, xn = gx[t].chunk(3, 1)
                hr, hz, hn = gh.chunk(3, 1)
                r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                n = torch.tanh(xn + r * hn)
                h = (1 - z) * n + z * h
                outs.append(h)
            return torch.stack(outs), h

    return LayerNormGRU()


def torch_step(p: dict, train: bool) -> Callable[[], None]:
    import torch
    model = torch_module(p)
    x, h0 = torch.from_numpy(p["x"]), torch.from_numpy(p["h0"])
    mask = torch.from_numpy(p["recurrent_mask"]) if "recurrent_mask" in p else None
    go = torch.from_numpy(p["grad_output"])

    def step():
        if train:
            model.zero_grad(set_to_none=True)
            y, _ = model(x, h0, mask)
            (y * go).sum().backward()
        else:
            with torch.no_grad():
                model(x, h0, mask)
    return step


def check(p: dict) -> float:
    """max |fastlstm - torch| / max(1, max|torch|) of the output (float32 both)."""
    import torch
    args = {k: v for k, v in p.items() if k != "grad_output"}
    mine = fastlstm.gru(**args, training=False).output
    mask = torch.from_numpy(p["recurrent_mask"]) if "recurrent_mask" in p else None
    with torch.no_grad():
        theirs = torch_module(p)(torch.from_numpy(p["x"]), torch.from_numpy(p["h0"]),
                                 mask)[0].numpy()
    return float(np.abs(mine - theirs).max() / max(1.0, np.abs(theirs).max()))


STEPS = {"fastlstm": fastlstm_step, "torch": torch_step}


@pytest.mark.parametrize("impl", ["fastlstm", "torch"])
@pytest.mark.parametrize("masked", [False, True], ids=["ln", "ln+mask"])
@pytest.mark.parametrize("mode", ["forward", "train"])
@pytest.mark.parametrize("shape", ["seed"])  # torch's Python loop takes seconds at "long": main()
def test_layer_norm_gru(benchmark, impl, shape, mode, masked):
    torch = pytest.importorskip("torch")
    old = torch.get_num_threads(), fastlstm.get_num_threads()
    torch.set_num_threads(THREADS)
    fastlstm.set_num_threads(THREADS)
    try:
        p = problem(shape, masked)
        err = check(p)
        assert err < 1e-4, f"fastlstm and torch disagree: {err:.2e}"
        step = STEPS[impl](p, mode == "train")
        step()
        benchmark.group = f"LayerNorm GRU {mode} {shape} {'ln+mask' if masked else 'ln'} t{THREADS}"
        benchmark.extra_info.update(impl=impl, shape=shape, mode=mode, masked=masked,
                                    threads=THREADS, max_rel_err_vs_torch=err)
        benchmark(step)
    finally:
        torch.set_num_threads(old[0])
        fastlstm.set_num_threads(old[1])


def main(reps: int = 7, threads: int = THREADS) -> None:
    import torch
    torch.set_num_threads(threads)
    fastlstm.set_num_threads(threads)
    print(f"fastlstm {fastlstm.__version__} ({fastlstm.isa()}), torch {torch.__version__}, "
          f"{threads} threads each, float32; median of {reps}, the two interleaved")
    for shape in SHAPES:
        for masked in (False, True):
            p = problem(shape, masked)
            err = check(p)
            for mode in ("forward", "train"):
                steps = {impl: make(p, mode == "train") for impl, make in STEPS.items()}
                times: Dict[str, list] = {impl: [] for impl in steps}
                for impl, step in steps.items():
                    step()  # warm up
                for _ in range(reps):
                    for impl, step in steps.items():
                        t0 = time.perf_counter()
                        step()
                        times[impl].append(time.perf_counter() - t0)
                med = {impl: float(np.median(v)) for impl, v in times.items()}
                print(f"{shape:5s} {str(SHAPES[shape]):19s} {'ln+mask' if masked else 'ln':7s} "
                      f"{mode:7s}  fastlstm {med['fastlstm'] * 1e3:8.2f} ms  torch "
                      f"{med['torch'] * 1e3:8.2f} ms  torch/fastlstm {med['torch'] / med['fastlstm']:5.1f}x"
                      f"  (max rel err {err:.1e})")


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--reps", type=int, default=7)
    opts = ap.parse_args()
    main(opts.reps, opts.threads)
