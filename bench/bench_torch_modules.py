"""pytest-benchmark: one torch training step (RNN + Linear, Adam) with nn.LSTM/nn.GRU and with
fastlstm.torch.LSTM/GRU, at the shapes of ``torch_train_compare.py`` (which times the two
interleaved and is the number to quote). Peers share a group, so they sit side by side.

    pytest bench/bench_torch_modules.py --benchmark-only
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch_train_compare as ttc  # noqa: E402


@pytest.mark.parametrize("shape", list(ttc.SHAPES))
@pytest.mark.parametrize("impl", ["torch", "fastlstm"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_torch_training_step(benchmark, cell, impl, shape):
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        trainer = ttc.make_pair(cell, shape)[impl]
        for _ in range(3):
            trainer.step()
        benchmark.group = f"torch training step {cell} {shape} t2"
        benchmark.extra_info.update(cell=cell, impl=impl, shape=shape, threads=2)
        benchmark(trainer.step)
    finally:
        torch.set_num_threads(old)
